//! JSON wire types of Bulkhead's own endpoints: declared in `bulkhead-api`, shared
//! with the clients; this module re-exports them and keeps what only the server
//! needs (conversions from the vault's types). Requests refuse unknown fields.

use bulkhead_types::UnixMillis;
use bulkhead_vault::{Document, Tenant};
use serde::{Deserialize, Serialize};

pub use bulkhead_api::{
    CreateDocumentRequest, CreateDocumentResponse, CreateTenantRequest, DocumentListResponse,
    DocumentSummary, IssueKeyRequest, IssuedKeyResponse, PageQuery, RotateKeyResponse,
    SetModelsRequest, SetPolicyRequest,
};

/// RFC 3339 in UTC, as every time on the wire is written.
pub fn rfc3339(t: UnixMillis) -> String {
    t.rfc3339()
}

// TenantResponse, TenantListResponse and DocumentResponse stay declared here as
// well as in bulkhead-api until admin.rs and documents.rs call conversion functions:
// they use `TenantResponse::from(&tenant)`, and the orphan rule forbids that `From`
// impl on bulkhead-api's type. Same fields, same order.
#[derive(Debug, Serialize, Deserialize)]
pub struct TenantResponse {
    pub id: String,
    pub name: String,
    pub region: String,
    pub policy: String,
    pub status: String,
    pub key_version: u32,
    pub created_at: String,
    /// The model allow-list; `null`: every model of the tenant's region.
    pub models: Option<Vec<String>>,
}

impl From<&Tenant> for TenantResponse {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            region: t.region.to_string(),
            policy: t.policy.to_string(),
            status: t.status.as_str().to_owned(),
            key_version: t.current_key_version.get(),
            created_at: rfc3339(t.created_at),
            models: t.models.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TenantListResponse {
    pub tenants: Vec<TenantResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DocumentResponse {
    pub id: String,
    pub text: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

impl From<&Document> for DocumentResponse {
    fn from(d: &Document) -> Self {
        Self {
            id: d.id.to_string(),
            text: d.text.to_string(),
            metadata: d.metadata.clone(),
            created_at: rfc3339(d.created_at),
            expires_at: d.expires_at.map(rfc3339),
        }
    }
}
