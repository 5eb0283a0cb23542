//! Tenants, keys and documents: the admin plane's and the document API's bodies.
use bulkhead_types::{DocumentId, PolicyName, Region};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: String,
    #[serde(default)]
    pub region: Option<Region>,
    #[serde(default)]
    pub policy: Option<PolicyName>,
    /// The models the tenant may call; absent: every model of its region.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// `PUT /admin/v1/tenants/{id}/policy`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicyRequest {
    pub policy: PolicyName,
}

/// `PUT /admin/v1/tenants/{id}/models`: `null` lifts the allow-list.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetModelsRequest {
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantListResponse {
    pub tenants: Vec<TenantResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueKeyRequest {
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedKeyResponse {
    pub key_id: String,
    /// Shown once; the server keeps only a keyed hash.
    pub key: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateKeyResponse {
    pub tenant_id: String,
    pub key_version: u32,
    /// Older records are being re-sealed under the new version in the background.
    pub resealing: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDocumentRequest {
    #[serde(default)]
    pub id: Option<DocumentId>,
    pub text: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateDocumentResponse {
    pub id: String,
    /// Retrieval chunks indexed for the document. Chunking arrives with tenant-scoped
    /// retrieval; until then documents are stored whole and this is 0.
    pub chunks: u32,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentResponse {
    pub id: String,
    pub text: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// A document in a list page: everything but the text, which `GET /v1/documents/{id}`
/// returns, so a page stays small whatever the documents weigh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentSummary {
    pub id: String,
    pub text_bytes: usize,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentListResponse {
    pub documents: Vec<DocumentSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub cursor: Option<String>,
}
