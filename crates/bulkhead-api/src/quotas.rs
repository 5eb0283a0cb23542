//! Quotas, rate limits and budgets, and what a tenant has used of them:
//! `GET /v1/usage`, `GET|PUT /admin/v1/tenants/{id}/usage|quotas`.
use serde::{Deserialize, Serialize};

/// Limits on one tenant. Each is absent (no limit at this level) or at least 1.
/// The effective limit of a tenant is, field by field, the tenant's own (set by
/// the operator), else its pack's, else the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Requests a second from the tenant, all keys together (bursts up to one
    /// second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Requests a second from any one API key of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second_per_key: Option<u32>,
    /// Requests of the tenant in flight at once (a streamed answer counts until
    /// its last byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u32>,
    /// Requests in flight at once from any one API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests_per_key: Option<u32>,
    /// Model tokens (prompt and completion, as the upstream's `usage` reports
    /// them) per UTC minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Model tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Bytes of text sent to an embedder per UTC day: documents as they are
    /// ingested and `/v1/embeddings` inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_bytes_per_day: Option<u64>,
    /// Sealed bytes stored: documents, their chunks, sessions and their messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Live documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<u64>,
}

impl Quotas {
    /// Field by field: this value where set, else `fallback`'s.
    pub fn or(self, fallback: Quotas) -> Quotas {
        Quotas {
            requests_per_second: self.requests_per_second.or(fallback.requests_per_second),
            requests_per_second_per_key: self
                .requests_per_second_per_key
                .or(fallback.requests_per_second_per_key),
            concurrent_requests: self.concurrent_requests.or(fallback.concurrent_requests),
            concurrent_requests_per_key: self
                .concurrent_requests_per_key
                .or(fallback.concurrent_requests_per_key),
            tokens_per_minute: self.tokens_per_minute.or(fallback.tokens_per_minute),
            tokens_per_day: self.tokens_per_day.or(fallback.tokens_per_day),
            embedding_bytes_per_day: self
                .embedding_bytes_per_day
                .or(fallback.embedding_bytes_per_day),
            stored_bytes: self.stored_bytes.or(fallback.stored_bytes),
            documents: self.documents.or(fallback.documents),
        }
    }

    /// No limit is set.
    pub fn is_unset(&self) -> bool {
        *self == Quotas::default()
    }

    /// Every limit is at least 1 (an absent one is no limit); the error names the
    /// field.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            (
                "requests_per_second",
                self.requests_per_second.map(u64::from),
            ),
            (
                "requests_per_second_per_key",
                self.requests_per_second_per_key.map(u64::from),
            ),
            (
                "concurrent_requests",
                self.concurrent_requests.map(u64::from),
            ),
            (
                "concurrent_requests_per_key",
                self.concurrent_requests_per_key.map(u64::from),
            ),
            ("tokens_per_minute", self.tokens_per_minute),
            ("tokens_per_day", self.tokens_per_day),
            ("embedding_bytes_per_day", self.embedding_bytes_per_day),
            ("stored_bytes", self.stored_bytes),
            ("documents", self.documents),
        ];
        match fields.iter().find(|(_, v)| *v == Some(0)) {
            Some((name, _)) => Err(format!(
                "{name} must be at least 1 (leave it out for no limit)"
            )),
            None => Ok(()),
        }
    }
}

/// One measure against its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub used: u64,
    /// Absent: no limit.
    pub limit: Option<u64>,
}

/// What a tenant has used, against its effective limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageResponse {
    pub tenant_id: String,
    /// Requests in flight now.
    pub concurrent_requests: Meter,
    /// Requests admitted in the current second.
    pub requests_this_second: Meter,
    /// Tokens settled this UTC minute, plus those reserved by calls in flight.
    pub tokens_this_minute: Meter,
    pub tokens_today: Meter,
    /// Tokens reserved by calls in flight (part of the two above).
    pub tokens_reserved: u64,
    pub embedding_bytes_today: Meter,
    pub stored_bytes: Meter,
    pub documents: Meter,
    /// Requests refused by a quota since the server started, by quota name.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// The effective limits and, per field, where each came from: `tenant`,
    /// `pack` or `server`.
    pub quotas: Quotas,
    pub sources: std::collections::BTreeMap<String, String>,
}
