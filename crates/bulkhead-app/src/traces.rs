//! Decision traces: what every model call decided and why, sealed under the
//! tenant's key, its hash appended to the tenant's audit log, readable by the
//! tenant (`GET /v1/traces/{id}`).
//!
//! A trace holds ids, hashes, counts, timings and outcomes — never the prompt, the
//! context or the answer — so it can be kept longer than the data it describes.
//! The audit entry is written first and the trace record after, carrying the
//! entry's index: a reader goes from a trace to its inclusion proof in one step.

use bulkhead_guard::{InjectionAction, Verdict};
use std::collections::BTreeMap;

use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{LogId, RecordKind, UnixMillis};
use bulkhead_vault::{NewSealed, TenantCtx};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{AppError, AppResult};
use crate::kinds::{EventKind, TraceOutcome};
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// One context item that was (or was not) put in front of the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContextItem {
    /// `chunk`, `session_message` or `canary`.
    pub kind: String,
    pub id: String,
    /// `sha256:<hex>` of the item's text.
    pub hash: String,
    /// False when the guard dropped it (an injection in a retrieved chunk).
    pub used: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GuardSummary {
    /// `allow`, `redacted` or `blocked`; none (written `""`) when the guard never
    /// ran (an upstream failure).
    #[serde(with = "verdict_or_empty")]
    pub verdict: Option<Verdict>,
    /// Finding types and how many of each; never the text.
    pub findings: BTreeMap<String, i64>,
    pub redactions: u32,
    pub blocked: bool,
    /// The other tenants' data was matched (who is in the operator log only).
    pub cross_tenant: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InjectionSummary {
    pub score: u32,
    pub action: InjectionAction,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub total: f64,
    /// Waiting on the upstream (head and body).
    pub upstream: f64,
    /// From the start of the call to the first piece of the answer (streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token: Option<f64>,
    /// Everything but the upstream: what the gateway added.
    pub overhead: f64,
}

/// The trace of one model call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    pub id: String,
    /// `chat.completion` or `embeddings`.
    pub call: String,
    pub tenant: String,
    pub key_id: String,
    pub request_id: String,
    pub model: String,
    pub upstream: String,
    pub region: String,
    pub stream: bool,
    pub started_at: String,
    /// `sha256:<hex>` of the client's messages (or inputs) as received.
    pub prompt_hash: String,
    pub messages: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub context: Vec<ContextItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionSummary>,
    pub guard: GuardSummary,
    /// `sha256:<hex>` of the answer as delivered (after redaction), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    pub latency_ms: Latency,
    pub outcome: TraceOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is stored: the trace and where its hash is in the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTrace {
    trace: Trace,
    content_hash: String,
    /// The leaf hash (hex) of the event that logs this trace: it finds the entry,
    /// and so its inclusion proof.
    leaf_hash: String,
}

/// Where a trace's hash is in the tenant's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceAudit {
    /// The entry of the tenant's log whose `trace` subject carries `content_hash`;
    /// `GET /v1/audit/proof/inclusion?index=…` proves it.
    pub index: u64,
    /// `sha256:<hex>` of the trace's JSON as it was logged.
    pub content_hash: String,
}

pub fn new_trace_id() -> String {
    let bytes: [u8; 12] = bulkhead_crypto::random_array().unwrap_or_else(|_| {
        // The system CSPRNG failing is fatal elsewhere; a time-based id here only
        // has to be unique.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut b = [0u8; 12];
        b.copy_from_slice(&nanos.to_le_bytes()[..12]);
        b
    });
    format!("tr_{}", bulkhead_types::hex_lower(&bytes))
}

fn valid_trace_id(raw: &str) -> bool {
    raw.len() == 27
        && raw.starts_with("tr_")
        && raw[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Appends the trace's hash to the tenant's log and stores the trace sealed, in
/// one transaction (one commit, never one without the other). Returns the log
/// index once both are durable.
pub async fn commit(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    trace: &Trace,
    ttl_secs: Option<u64>,
) -> AppResult<u64> {
    let bytes = serde_json::to_vec(trace).map_err(|_| AppError::Internal)?;
    let content_hash = bulkhead_ledger::event::content_hash(&bytes);
    let mut trail = Trail::tenant(app, ctx, EventKind::ModelCall, rid)
        .subject(Subject::new("trace", &*trace.id).with_content(&bytes))
        .attr("call", Attr::Text(trace.call.clone()))
        .attr("model", Attr::Text(trace.model.clone()))
        .attr("upstream", Attr::Text(trace.upstream.clone()))
        .attr("outcome", Attr::Text(trace.outcome.as_str().into()))
        .attr("context_items", Attr::Int(trace.context.len() as i64));
    trail = with_context_subjects(trail, trace);
    if trace.guard.cross_tenant {
        trail = trail.denied("cross_tenant");
    }
    let stored = StoredTrace {
        trace: trace.clone(),
        content_hash,
        leaf_hash: bulkhead_types::hex_lower(&trail.leaf_hash()),
    };
    let body = Zeroizing::new(serde_json::to_vec(&stored).map_err(|_| AppError::Internal)?);
    let expires_at = ttl_secs.map(|t| app.vault.now().saturating_add_secs(t));
    let rows = vec![NewSealed {
        kind: RecordKind::TRACE,
        record_id: trace.id.clone(),
        body,
        expires_at,
    }];
    trail
        .record_with(LogId::Tenant(ctx.tenant().clone()), rows)
        .await
}

/// Names each context item put in front of the model, with its hash, as a
/// subject of the call's entry.
fn with_context_subjects<'a>(mut trail: Trail<'a>, trace: &Trace) -> Trail<'a> {
    for item in trace.context.iter().filter(|c| c.used) {
        trail = trail.subject(Subject {
            kind: item.kind.clone(),
            id: item.id.clone(),
            hash: Some(item.hash.clone()),
        });
    }
    trail
}

/// Appends a streamed call's intent to the tenant's log, before any of its
/// answer is released: `model.call.start` with the trace id, key, model,
/// upstream and the context items put in front of the model (with their
/// hashes). A stream's outcome is known only at its end; without this entry an
/// answer could be on the wire while nothing durable said the call happened.
/// The `model.call` entry with the whole trace follows when the stream ends.
pub async fn commit_intent(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    trace: &Trace,
) -> AppResult<u64> {
    let mut trail = Trail::tenant(app, ctx, EventKind::ModelCallStart, rid)
        .subject(Subject::new("trace", &*trace.id))
        .attr("call", Attr::Text(trace.call.clone()))
        .attr("model", Attr::Text(trace.model.clone()))
        .attr("upstream", Attr::Text(trace.upstream.clone()))
        .attr("context_items", Attr::Int(trace.context.len() as i64));
    trail = with_context_subjects(trail, trace);
    trail
        .record_with(LogId::Tenant(ctx.tenant().clone()), Vec::new())
        .await
}

/// Reads one of the tenant's own traces, with where its hash is in the tenant's
/// log. A foreign or unknown id is the same `NotFound`, and logged as a denied
/// read.
pub async fn read(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    id: &str,
) -> AppResult<(Trace, TraceAudit)> {
    let log = LogId::Tenant(ctx.tenant().clone());
    let opened = if valid_trace_id(id) {
        app.vault.get_sealed(ctx, RecordKind::TRACE, id).await?
    } else {
        None
    };
    let Some(opened) = opened else {
        Trail::tenant(app, ctx, EventKind::TraceRead, rid)
            .denied("not_found")
            .record(log)
            .await?;
        return Err(AppError::NotFound);
    };
    let stored: StoredTrace = serde_json::from_slice(opened.body.as_slice()).map_err(|e| {
        tracing::error!(error = %e, "a stored trace does not parse");
        AppError::Internal
    })?;
    let leaf: Option<bulkhead_ledger::Hash> = (0..32)
        .map(|i| u8::from_str_radix(stored.leaf_hash.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .and_then(|v| v.try_into().ok());
    let index = match leaf {
        Some(leaf) => app.audit.index_of(&log, &leaf).await?,
        None => None,
    };
    let Some(index) = index else {
        // Written in one transaction with its entry: a trace without one means
        // the store was altered.
        tracing::error!(trace = %id, "a stored trace has no audit entry");
        return Err(AppError::Internal);
    };
    Trail::tenant(app, ctx, EventKind::TraceRead, rid)
        .subject(Subject::new("trace", id))
        .record(log)
        .await?;
    Ok((
        stored.trace,
        TraceAudit {
            index,
            content_hash: stored.content_hash,
        },
    ))
}

pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

pub fn started_at(now: UnixMillis) -> String {
    now.rfc3339()
}

/// A guard verdict written as its name, and a missing one as `""` (what traces
/// stored before the verdict was typed).
mod verdict_or_empty {
    use bulkhead_guard::Verdict;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Verdict>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Verdict>, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() {
            return Ok(None);
        }
        Verdict::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&name)).map(Some)
    }
}
