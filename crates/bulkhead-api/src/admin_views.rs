//! Admin-plane answers the CLI reads that have no request type of their own:
//! the policy baseline status (also the application's own type,
//! `bulkhead_app::drift`) and a tenant's export (the body of `export_tenant`,
//! crates/bulkhead-server/src/admin.rs).

use serde::{Deserialize, Serialize};

use crate::{DocumentResponse, TenantResponse};

/// `GET /admin/v1/config/policy` and `POST /admin/v1/config/approve`: where the
/// effective isolation policy stands against the approved baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriftStatus {
    /// `sha256:<hex>` of the effective policy's canonical JSON.
    pub hash: String,
    pub approved_hash: String,
    pub drift: bool,
    /// Top-level sections (and packs, upstreams by name) that differ.
    pub changed: Vec<String>,
    pub effective: serde_json::Value,
}

/// `GET /admin/v1/tenants/{id}/export`: everything the tenant stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantExport {
    pub tenant: TenantResponse,
    pub exported_at: String,
    pub documents: Vec<DocumentResponse>,
    pub sessions: Vec<ExportedSession>,
    /// Each trace as stored (`null` for one that could not be read back).
    pub traces: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedSession {
    pub id: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// The session's messages as stored.
    pub messages: Vec<serde_json::Value>,
}
