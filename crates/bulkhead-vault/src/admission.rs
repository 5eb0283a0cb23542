//! The storage quota's gate: before the vault stores rows a quota counts
//! (documents, chunks, sessions, session messages), it asks an `Admission` for
//! their exact sealed size. The quota's owner (the application's governor) keeps
//! the ledger; the vault only guarantees it is asked on every such write and told
//! of every deletion, whichever path made it.

use std::future::Future;
use std::pin::Pin;

use bulkhead_store::RecordRow;
use bulkhead_types::{RecordKind, TenantId};

use crate::VaultResult;

/// A storage quota's gate.
pub trait Admission: Send + Sync + std::fmt::Debug + 'static {
    /// Admits `bytes` sealed bytes holding `documents` new documents for the
    /// tenant, or refuses with `VaultError::QuotaExceeded`. The vault commits the
    /// ticket once the rows are stored; a ticket dropped uncommitted releases its
    /// reservation.
    fn admit<'a>(
        &'a self,
        tenant: &'a TenantId,
        bytes: u64,
        documents: u64,
    ) -> Pin<Box<dyn Future<Output = VaultResult<Admitted>> + Send + 'a>>;

    /// Rows of the tenant that a quota counts were deleted (by the tenant, by
    /// expiry, by erasure): its ledger must be read again before it is trusted.
    fn released(&self, tenant: &TenantId);
}

/// An admitted write: what to do once it is stored. Dropping it uncommitted
/// drops the closure, and with it whatever reservation it holds.
#[must_use = "commit the ticket once the rows are stored"]
pub struct Admitted(Option<Box<dyn FnOnce() + Send>>);

impl Admitted {
    /// A write no quota limits.
    pub fn free() -> Self {
        Self(None)
    }

    /// A write whose reservation `commit` turns into usage.
    pub fn new(commit: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Box::new(commit)))
    }

    pub fn commit(mut self) {
        if let Some(commit) = self.0.take() {
            commit();
        }
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Admitted(reserved)"
        } else {
            "Admitted(free)"
        })
    }
}

/// Whether a quota counts rows of this kind.
pub(crate) fn counted(kind: RecordKind) -> bool {
    bulkhead_store::QUOTA_KINDS.contains(&kind.as_str())
}

/// The sealed bytes and new documents among `rows` that a quota counts.
pub(crate) fn measure(rows: &[RecordRow]) -> (u64, u64) {
    rows.iter()
        .filter(|r| counted(r.kind))
        .fold((0, 0), |(bytes, docs), r| {
            (
                bytes + r.sealed.len() as u64,
                docs + u64::from(r.kind == RecordKind::DOCUMENT),
            )
        })
}
