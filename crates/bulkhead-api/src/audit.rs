//! The audit log endpoints (`/v1/audit/…`, `/admin/v1/audit/…`): entries and
//! proofs. Checkpoints and the public key travel as plain text (C2SP notes).

use serde::{Deserialize, Serialize};

/// `GET …/entries?start=&end=`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntriesResponse {
    pub entries: Vec<EntryResponse>,
}

/// One entry: its index, base64 leaf hash and the event (`null` once the tenant
/// was crypto-shredded; the leaf hash still verifies).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryResponse {
    pub index: u64,
    pub leaf_hash: String,
    pub event: Option<serde_json::Value>,
}

/// `GET …/proof/inclusion?index=&size=`: base64 hashes, RFC 6962 order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InclusionResponse {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    pub proof: Vec<String>,
}

/// `GET …/proof/consistency?old=&new=`: base64 hashes, RFC 6962 order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsistencyResponse {
    pub old: u64,
    pub new: u64,
    pub proof: Vec<String>,
}
