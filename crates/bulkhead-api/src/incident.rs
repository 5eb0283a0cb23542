//! Impact reports and incidents (`/admin/v1/tenants/{id}/impact`, `/admin/v1/incidents…`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One logged event in the window, with the proof that it is in the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImpactItem {
    /// `tenant` or `operator`.
    pub log: String,
    pub index: u64,
    pub time: String,
    pub kind: String,
    pub actor: String,
    /// `allowed` or `denied`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the event is about: `kind:id`, with `@sha256:…` when the event hashes
    /// the content (a trace, a document).
    pub subjects: Vec<String>,
    /// The event's attributes (ids, counts, outcomes; never content).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Base64 leaf hash and RFC 6962 inclusion proof against the report's
    /// checkpoint for this log.
    pub leaf_hash: String,
    pub proof: Vec<String>,
}

/// How one log was read for the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogSection {
    /// The C2SP checkpoint (signed note) the proofs are against.
    pub checkpoint: String,
    pub size: u64,
    /// Entries read in and around the window.
    pub scanned: u64,
    /// True if the window held more than the report reads; narrow it.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImpactSummary {
    pub reads: u64,
    pub model_calls_returned: u64,
    pub blocked: u64,
    pub denied: u64,
    pub other: u64,
    /// Blocked answers *to* this tenant that carried other tenants' data.
    pub leaks_blocked_to_tenant: u64,
    /// Blocked answers to other tenants that carried *this* tenant's data.
    pub leaks_blocked_of_tenant: u64,
    /// Distinct ids of documents, sessions and traces read or used.
    pub documents: Vec<String>,
    pub sessions: Vec<String>,
    pub traces: Vec<String>,
    /// Events per actor (`key:…`, `admin`, `system:…`).
    pub actors: BTreeMap<String, u64>,
}

/// What happened to one tenant's context in a window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImpactReport {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    /// The server's verifier key (C2SP vkey) for the checkpoints below.
    pub vkey: String,
    pub tenant_log: LogSection,
    pub operator_log: LogSection,
    pub summary: ImpactSummary,
    /// Context reads: documents, listings, searches, sessions, traces, exports.
    pub read: Vec<ImpactItem>,
    /// Model calls whose answer was delivered.
    pub returned: Vec<ImpactItem>,
    /// Blocked answers, refused requests and leaks concerning the tenant.
    pub blocked: Vec<ImpactItem>,
    /// Everything else in the window: writes, deletions, admin actions, sweeps.
    pub other: Vec<ImpactItem>,
}

// ---- incidents ---------------------------------------------------------------

/// An incident: a tenant and a window under investigation, opened by an operator
/// or automatically by a critical alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub id: String,
    pub title: String,
    pub tenant: String,
    /// Other tenants involved (e.g. the owners of leaked data).
    #[serde(default)]
    pub related_tenants: Vec<String>,
    pub from: String,
    pub to: String,
    pub opened_at: String,
    pub opened_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// `open` or `closed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

/// `GET /admin/v1/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncidentList {
    pub incidents: Vec<Incident>,
}

/// `GET /admin/v1/incidents/{id}`: the incident and its impact report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncidentShown {
    pub incident: Incident,
    pub report: ImpactReport,
}
