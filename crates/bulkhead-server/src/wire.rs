//! JSON wire types of Bulkhead's own endpoints: declared in `bulkhead-api`, shared
//! with the clients; this module re-exports them and keeps what only the server
//! needs (conversions from the vault's types, as free functions: the orphan rule
//! forbids `From` impls on bulkhead-api's types here). Requests refuse unknown fields.

use bulkhead_types::UnixMillis;
use bulkhead_vault::{Document, Tenant};

pub use bulkhead_api::{
    CreateDocumentRequest, CreateDocumentResponse, CreateTenantRequest, DocumentListResponse,
    DocumentResponse, DocumentSummary, IssueKeyRequest, IssuedKeyResponse, PageQuery,
    RotateKeyResponse, SetModelsRequest, SetPolicyRequest, TenantListResponse, TenantResponse,
};

/// RFC 3339 in UTC, as every time on the wire is written.
pub fn rfc3339(t: UnixMillis) -> String {
    t.rfc3339()
}

/// The wire form of a tenant.
pub fn tenant_response(t: &Tenant) -> TenantResponse {
    TenantResponse {
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

/// The wire form of an opened document.
pub fn document_response(d: &Document) -> DocumentResponse {
    DocumentResponse {
        id: d.id.to_string(),
        text: d.text.to_string(),
        metadata: d.metadata.clone(),
        created_at: rfc3339(d.created_at),
        expires_at: d.expires_at.map(rfc3339),
    }
}
