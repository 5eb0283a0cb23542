//! `GET /v1/traces/{id}`: a model call's decision trace and where it is in the
//! tenant's audit log, as clients read it. Mirrors the server's `TraceResponse`
//! (crates/bulkhead-server/src/traces.rs) field for field; the server's enums
//! (verdict, outcome, injection action) are their wire strings here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceResponse {
    #[serde(flatten)]
    pub trace: Trace,
    pub audit: TraceAudit,
}

/// The entry of the tenant's log that commits to the trace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceAudit {
    /// Its index: `GET /v1/audit/proof/inclusion?index=…` proves it.
    pub index: u64,
    /// `sha256:<hex>` of the trace's JSON as it was logged; the entry's `trace`
    /// subject carries it as its `hash`.
    pub content_hash: String,
}

/// The trace of one model call: ids, hashes, counts, timings and outcomes, never
/// content.
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
    pub prompt_hash: String,
    pub messages: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub context: Vec<ContextItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionSummary>,
    pub guard: GuardSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    pub latency_ms: Latency,
    /// `ok`, `redacted`, `blocked`, `refused_input`, … (`TraceOutcome`).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContextItem {
    /// `chunk`, `session_message` or `canary`.
    pub kind: String,
    pub id: String,
    pub hash: String,
    pub used: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuardSummary {
    /// `allow`, `redacted` or `blocked`; `""` when the guard never ran.
    pub verdict: String,
    /// Finding types and how many of each; never the text.
    pub findings: BTreeMap<String, i64>,
    pub redactions: u32,
    pub blocked: bool,
    /// Another tenant's data was matched (whose is only in the operator log).
    pub cross_tenant: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InjectionSummary {
    pub score: u32,
    /// `allow`, `flag`, `drop` or `block`.
    pub action: String,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub total: f64,
    pub upstream: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token: Option<f64>,
    pub overhead: f64,
}
