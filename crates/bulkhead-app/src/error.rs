//! The closed set of ways an application call fails. Each has a stable code (the
//! same `code` the HTTP edge puts in its problem+json `type`), and a detail a
//! client may read: ids and field names, never content, SQL or key sources.

use bulkhead_audit::AuditError;
use bulkhead_vault::VaultError;

/// Why an application call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A field or parameter is wrong; the detail names it.
    #[error("{0}")]
    Invalid(String),
    /// No such resource — and, by design, also a resource of another tenant.
    #[error("no such resource")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TenantQuarantined(String),
    /// The input was refused by the content policy (prompt injection).
    #[error("{0}")]
    ContentRefused(String),
    /// The store, the audit log or a dependency cannot serve now; retry.
    #[error("{0}")]
    Unavailable(String),
    /// The stored audit log no longer matches a checkpoint this server signed.
    #[error("the audit log failed its integrity check; the server refuses to sign or serve it")]
    AuditInconsistent,
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A rate, concurrency or budget limit: retrying after the given seconds
    /// can succeed.
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    /// A quota that waiting does not free (stored bytes, documents, a call
    /// larger than a whole budget).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A failure inside the server; logged in full where it happened.
    #[error("the server failed to complete the request")]
    Internal,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// The stable code of this failure (`invalid-request`, `not-found`, …).
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Invalid(_) => "invalid-request",
            AppError::NotFound => "not-found",
            AppError::Conflict(_) => "conflict",
            AppError::Forbidden(_) => "forbidden",
            AppError::TenantQuarantined(_) => "tenant-quarantined",
            AppError::ContentRefused(_) => "content-refused",
            AppError::Unavailable(_) => "unavailable",
            AppError::AuditInconsistent => "audit-inconsistent",
            AppError::UpstreamFailed(_) => "upstream-failed",
            AppError::UpstreamTimeout(_) => "upstream-timeout",
            AppError::RateLimited { .. } => "rate-limited",
            AppError::QuotaExceeded(_) => "quota-exceeded",
            AppError::Internal => "internal",
        }
    }

    /// What a client may be told.
    pub fn detail(&self) -> String {
        self.to_string()
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        AppError::Invalid(detail.into())
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        AppError::Unavailable(detail.into())
    }
}

impl From<VaultError> for AppError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::NotFound => AppError::NotFound,
            VaultError::Conflict => AppError::Conflict("a document with this id exists".into()),
            VaultError::Invalid(msg) => AppError::Invalid(msg),
            VaultError::QuotaExceeded(msg) => AppError::QuotaExceeded(msg),
            VaultError::Store(bulkhead_store::StoreError::Closed) => {
                AppError::Unavailable("the server is shutting down".into())
            }
            other => {
                tracing::error!(error = %other, "request failed inside the vault");
                AppError::Internal
            }
        }
    }
}

impl From<bulkhead_store::StoreError> for AppError {
    fn from(e: bulkhead_store::StoreError) -> Self {
        VaultError::Store(e).into()
    }
}

impl From<AuditError> for AppError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Invalid(detail) => AppError::Invalid(detail),
            AuditError::Inconsistent { .. } => {
                tracing::error!(error = %e, "audit log integrity check failed");
                AppError::AuditInconsistent
            }
            AuditError::Unavailable(_) => {
                tracing::error!(error = %e, "audit log unavailable; the request is refused");
                AppError::Unavailable(
                    "the audit log could not record this request, so it was not served".into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_id_and_a_missing_one_are_the_same_error() {
        assert_eq!(AppError::from(VaultError::NotFound), AppError::NotFound);
        assert_eq!(AppError::NotFound.code(), "not-found");
        assert_eq!(AppError::NotFound.detail(), "no such resource");
    }

    #[test]
    fn internal_failures_say_nothing_of_the_insides() {
        let e = AppError::from(VaultError::Invalid("ttl_seconds must be positive".into()));
        assert_eq!(e.code(), "invalid-request");
        assert_eq!(
            AppError::Internal.detail(),
            "the server failed to complete the request"
        );
    }
}
