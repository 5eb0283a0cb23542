//! The retention sweeper: deletes records whose TTL ran out (documents with their
//! chunks, sessions with their messages, traces), a bounded batch per tick, and
//! logs every sweep.
//!
//! Expiry itself takes effect at read time: every read filters on `expires_at`,
//! so an expired item is invisible the moment its time is up. The sweeper makes
//! it gone: the rows are deleted (SQLite's `secure_delete` zeroes the pages), the
//! guard drops the documents' fingerprints, the hot indexes forget them, and each
//! affected tenant's log records what expired (ids only), with a summary in the
//! operator log. Must never: delete a record that has not expired (the store
//! re-checks `expires_at` in the deleting statement); do unbounded work per tick.

use std::collections::BTreeMap;
use std::time::Duration;

use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{DocumentId, LogId, RecordKind, TenantId};
use bulkhead_vault::Expired;

use crate::error::AppResult;
use crate::kinds::EventKind;
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepStats {
    /// Rows deleted, by record kind.
    pub deleted: BTreeMap<&'static str, u64>,
    pub tenants: usize,
    /// The batch was full: more expired rows are probably waiting.
    pub more: bool,
}

impl SweepStats {
    pub fn total(&self) -> u64 {
        self.deleted.values().sum()
    }
}

/// The last sweep, for the evidence report and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastSweep {
    pub at: String,
    pub deleted: u64,
    pub tenants: usize,
}

/// The most recent sweep this process ran, kept in memory.
#[derive(Debug, Default)]
pub struct SweepHistory(std::sync::Mutex<Option<LastSweep>>);

impl SweepHistory {
    pub fn last(&self) -> Option<LastSweep> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record(&self, sweep: LastSweep) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(sweep);
    }
}

fn sweep_request_id() -> RequestId {
    let bytes: [u8; 12] = bulkhead_crypto::random_array().unwrap_or([0; 12]);
    RequestId(format!("sweep_{}", bulkhead_types::hex_lower(&bytes)))
}

/// One sweep: at most `batch` expired rows.
pub async fn sweep_once(app: &Services, batch: u32) -> AppResult<SweepStats> {
    // Protected prompts leave the guard's memory when their window ends; their
    // sealed evidence rows are expired records like any other, deleted below.
    crate::guard::expire_protected(app);
    let expired = app.vault.expired(batch).await?;
    if expired.is_empty() {
        app.sweeps.record(LastSweep {
            at: app.vault.now().rfc3339(),
            deleted: 0,
            tenants: 0,
        });
        return Ok(SweepStats::default());
    }
    let more = expired.len() as u32 >= batch;
    app.vault.delete_expired(&expired).await?;

    let mut per_tenant: BTreeMap<&TenantId, Vec<&Expired>> = BTreeMap::new();
    for item in &expired {
        per_tenant.entry(&item.tenant).or_default().push(item);
    }
    let mut stats = SweepStats {
        tenants: per_tenant.len(),
        more,
        ..SweepStats::default()
    };
    let rid = sweep_request_id();
    for (tenant, items) in &per_tenant {
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut trail = Trail::new(
            app,
            EventKind::RetentionExpired,
            "system:retention".into(),
            &rid,
        )
        .about_tenant(tenant);
        let mut documents = false;
        for item in items {
            *counts.entry(item.kind.as_str()).or_insert(0) += 1;
            *stats.deleted.entry(item.kind.as_str()).or_insert(0) += 1;
            match item.kind {
                RecordKind::DOCUMENT => {
                    documents = true;
                    if let (Some(text), Ok(id)) = (&item.text, DocumentId::parse(&item.record_id)) {
                        app.guard.unindex(tenant, &id, text);
                    }
                    trail = trail.subject(Subject::new("document", &*item.record_id));
                }
                RecordKind::CHUNK => documents = true,
                RecordKind::SESSION => {
                    trail = trail.subject(Subject::new("session", &*item.record_id));
                }
                RecordKind::TRACE => {
                    trail = trail.subject(Subject::new("trace", &*item.record_id));
                }
                _ => {}
            }
        }
        if documents {
            // The hot index would still hold the chunks (never served: every hit is
            // re-read from the store); dropping it frees the memory now.
            app.retrieval.forget(tenant);
        }
        for (kind, n) in counts {
            trail = trail.attr(&format!("deleted.{kind}"), Attr::Int(n));
        }
        trail.record(LogId::Tenant((*tenant).clone())).await?;
    }
    let mut summary = Trail::new(
        app,
        EventKind::RetentionSweep,
        "system:retention".into(),
        &rid,
    )
    .attr("tenants", Attr::Int(stats.tenants as i64));
    for (kind, n) in &stats.deleted {
        summary = summary.attr(&format!("deleted.{kind}"), Attr::Int(*n as i64));
    }
    summary.record(LogId::Operator).await?;
    app.sweeps.record(LastSweep {
        at: app.vault.now().rfc3339(),
        deleted: stats.total(),
        tenants: stats.tenants,
    });
    tracing::info!(deleted = stats.total(), tenants = stats.tenants, more,
        kinds = ?stats.deleted, "retention sweep deleted expired records");
    Ok(stats)
}

/// Runs `sweep_once` every `interval` (sooner while a full batch says more is
/// waiting) until the runtime stops. A failed sweep is logged and retried at the
/// next tick: expired rows stay invisible meanwhile.
pub fn spawn_sweeper(app: Services, interval: Duration, batch: u32) {
    tokio::spawn(async move {
        loop {
            let pause = match sweep_once(&app, batch).await {
                Ok(stats) if stats.more => Duration::from_millis(100),
                Ok(_) => interval,
                Err(e) => {
                    tracing::warn!(error = %e,
                        "retention sweep failed; expired records stay invisible and the next tick retries");
                    interval
                }
            };
            tokio::time::sleep(pause).await;
        }
    });
}
