//! The answer of `DELETE /admin/v1/tenants/{id}`: the signed erasure receipt.
//!
//! The statement fields are optional here so that a verifier can say which one
//! a tampered receipt lacks instead of refusing to read it.

use serde::{Deserialize, Serialize};

/// The statement's fields, in the server's order of writing; `receipt_sha256` is
/// the SHA-256 of their canonical JSON.
pub const STATEMENT_FIELDS: &[&str] = &[
    "tenant_id",
    "erased_at",
    "data_keys_destroyed",
    "records_deleted",
    "api_keys_deleted",
    "method",
    "server",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErasureReceipt {
    /// The statement, exactly as sent (the hash covers these JSON values).
    #[serde(flatten)]
    pub statement: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub receipt_sha256: Option<String>,
    #[serde(default)]
    pub operator_log: Option<ReceiptLogEntry>,
    #[serde(default)]
    pub vkey: Option<String>,
}

impl ErasureReceipt {
    /// A statement field as text, for messages.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.statement.get(field).and_then(|v| v.as_str())
    }
}

/// The operator log entry that records the erasure, with its inclusion proof
/// against the checkpoint signed right after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReceiptLogEntry {
    pub index: u64,
    pub event: serde_json::Value,
    pub leaf_hash: String,
    pub proof: Vec<String>,
    pub checkpoint: String,
}
