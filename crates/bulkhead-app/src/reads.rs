//! Reads that change nothing but are evidence themselves: the admin plane's
//! views (tenants, usage, alerts, incidents, impact reports, evidence, every
//! log) and a key's reads of its own tenant's audit log. Each is logged, and
//! bounded so reading cannot make the server write without limit: the first
//! read of its kind (reader, what, whose) in a `READ_LOG_WINDOW_MS` window is
//! an entry, later ones in that window are only counted, and the next entry
//! carries the count (`unlogged_reads`). An admin read that concerns one tenant
//! goes to that tenant's log too, so its auditor sees the operator looked.
//!
//! A key's audit-log reads are one kind whatever the endpoint (checkpoint,
//! entries, proofs): a client verifying its log sees one new entry at most per
//! window, and written before the read is answered, so the checkpoint it reads
//! already holds it.

use std::collections::HashMap;
use std::sync::Mutex;

use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{LogId, TenantId};
use bulkhead_vault::TenantCtx;

use crate::error::AppResult;
use crate::kinds::EventKind;
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// One entry per kind of read per this long.
pub const READ_LOG_WINDOW_MS: i64 = 10 * 60_000;
/// Kinds of read tracked at once; past it, windows that ended are dropped, and
/// if none has, the read is logged (never lost, only less bounded).
const READ_KINDS_MAX: usize = 10_000;

/// The windows of each kind of read.
#[derive(Debug, Default)]
pub struct ReadLog {
    /// Kind → (when its window started, reads in it not logged).
    windows: Mutex<HashMap<String, (i64, u64)>>,
}

impl ReadLog {
    /// Whether this read is the one to log, with how many reads of its kind
    /// went unlogged before it; `None`: counted only.
    fn admit(&self, kind: String, now_ms: i64) -> Option<u64> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((started, unlogged)) = w.get_mut(&kind) {
            if now_ms - *started < READ_LOG_WINDOW_MS {
                *unlogged += 1;
                return None;
            }
            let before = *unlogged;
            *started = now_ms;
            *unlogged = 0;
            return Some(before);
        }
        if w.len() >= READ_KINDS_MAX {
            w.retain(|_, (started, _)| now_ms - *started < READ_LOG_WINDOW_MS);
            if w.len() >= READ_KINDS_MAX {
                return Some(0);
            }
        }
        w.insert(kind, (now_ms, 0));
        Some(0)
    }

    /// Forgets an erased tenant's windows.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.retain(|kind, _| !kind.contains(tenant.as_str()));
    }
}

/// Logs an admin-plane read of `what` (a route template) by `actor`, about
/// `tenant` when it concerns one (bounded, see the module docs).
pub async fn admin_read(
    app: &Services,
    rid: &RequestId,
    actor: &str,
    what: &str,
    tenant: Option<&TenantId>,
) -> AppResult<()> {
    let kind = format!("admin|{actor}|{what}|{}", tenant.map_or("", |t| t.as_str()));
    let Some(unlogged) = app.reads.admit(kind, app.vault.now().0) else {
        return Ok(());
    };
    let mut entry = Trail::new(app, EventKind::AdminRead, actor.to_owned(), rid)
        .attr("read", Attr::Text(what.into()))
        .attr("unlogged_reads", Attr::Int(unlogged as i64));
    let Some(t) = tenant else {
        return entry.record(LogId::Operator).await;
    };
    entry = entry
        .subject(Subject::new("tenant", t.as_str()))
        .about_tenant(t);
    let event = entry.event().clone();
    entry.record(LogId::Operator).await?;
    // The tenant's copy is for its auditor; an erased tenant's log (still
    // readable, never appended to again) gets none, and the operator's entry
    // is the record either way.
    if let Err(e) = app.audit.record(&LogId::Tenant(t.clone()), &event).await {
        tracing::debug!(tenant = %t, error = %e, "an admin read was logged in the operator log only");
    }
    Ok(())
}

/// Logs a key's read of its own tenant's audit log through `what` (bounded,
/// one kind for every audit endpoint: see the module docs).
pub async fn audit_read(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    what: &str,
) -> AppResult<()> {
    let kind = format!("audit|{}|{}", ctx.tenant(), ctx.key_id());
    let Some(unlogged) = app.reads.admit(kind, app.vault.now().0) else {
        return Ok(());
    };
    Trail::tenant(app, ctx, EventKind::AuditRead, rid)
        .attr("read", Attr::Text(what.into()))
        .attr("unlogged_reads", Attr::Int(unlogged as i64))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_kind_per_window_and_the_next_carries_the_count() {
        let log = ReadLog::default();
        assert_eq!(log.admit("a".into(), 0), Some(0));
        assert_eq!(log.admit("a".into(), 1), None);
        assert_eq!(log.admit("a".into(), 2), None);
        assert_eq!(log.admit("b".into(), 3), Some(0), "another kind");
        assert_eq!(log.admit("a".into(), READ_LOG_WINDOW_MS), Some(2));
        assert_eq!(log.admit("a".into(), READ_LOG_WINDOW_MS + 1), None);
    }

    #[test]
    fn the_windows_are_bounded() {
        let log = ReadLog::default();
        for i in 0..READ_KINDS_MAX {
            log.admit(format!("k{i}"), 0);
        }
        assert_eq!(log.admit("new".into(), 1), Some(0), "logged, not lost");
        assert_eq!(log.windows.lock().unwrap().len(), READ_KINDS_MAX);
        assert_eq!(log.admit("newer".into(), READ_LOG_WINDOW_MS), Some(0));
        assert_eq!(
            log.windows.lock().unwrap().len(),
            1,
            "ended windows dropped"
        );
    }
}
