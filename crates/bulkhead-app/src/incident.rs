//! Impact assessment and incidents: what was read, returned and blocked for one
//! tenant in a time window, from its audit log and the operator log, each item
//! with an inclusion proof against a checkpoint signed for the report.
//!
//! The report is built from the logs, not from the data: it lists ids, kinds,
//! hashes and counts — never a document's text or a prompt — so it can be handed
//! to the tenant, an auditor or a regulator. Must never: scan a log without bound
//! (a window is found by binary search on entry times, and at most
//! `ENTRIES_SCANNED_MAX` entries per log are read), or report an item without the
//! proof that it is in the signed log.

use std::collections::VecDeque;
use std::sync::Mutex;

pub use bulkhead_api::incident::{ImpactItem, ImpactReport, ImpactSummary, LogSection};
use bulkhead_audit::{Attr, Outcome, Subject};
use bulkhead_ledger::b64;
use bulkhead_ledger::event::AuditEvent;
use bulkhead_types::{LogId, TenantId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};
use crate::kinds::{EventKind, IncidentStatus};
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// Entries read from one log for one report, at most.
const ENTRIES_SCANNED_MAX: u64 = 200_000;
/// Entries fetched per store read while scanning.
const SCAN_BATCH: u64 = 512;
/// Entry times are taken when an event is queued, so neighbours can be out of
/// order by the time a batch waits; the scan starts and ends this much wider and
/// filters on each event's own time.
const CLOCK_SLACK_MS: i64 = 5_000;
/// Incidents kept in memory for the admin endpoint and the dashboard; each one is
/// also in the operator log.
const INCIDENTS_MAX: usize = 1000;

/// Event kinds that read the tenant's context.
const READ_KINDS: &[EventKind] = &[
    EventKind::DocumentRead,
    EventKind::DocumentList,
    EventKind::Search,
    EventKind::SessionRead,
    EventKind::TraceRead,
    EventKind::TenantExport,
];

/// Builds the impact report for `tenant` over `[from, to]`.
pub async fn impact_report(
    app: &Services,
    tenant: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
) -> AppResult<ImpactReport> {
    if from > to {
        return Err(AppError::invalid("`from` must not be after `to`"));
    }
    // A foreign or missing tenant is the same 404.
    app.vault.tenant(tenant).await?;
    let tenant_log = LogId::Tenant(tenant.clone());
    let (tenant_section, tenant_events) = read_window(app, &tenant_log, from, to, |_| true).await?;
    let needle = tenant.to_string();
    let (operator_section, operator_events) =
        read_window(app, &LogId::Operator, from, to, |e| concerns(e, &needle)).await?;

    let mut report = ImpactReport {
        tenant: needle.clone(),
        from: from.rfc3339(),
        to: to.rfc3339(),
        generated_at: app.vault.now().rfc3339(),
        vkey: app.audit.vkey(),
        tenant_log: tenant_section,
        operator_log: operator_section,
        summary: ImpactSummary::default(),
        read: Vec::new(),
        returned: Vec::new(),
        blocked: Vec::new(),
        other: Vec::new(),
    };
    let mut documents = std::collections::BTreeSet::new();
    let mut sessions = std::collections::BTreeSet::new();
    let mut traces = std::collections::BTreeSet::new();
    for (item, event) in tenant_events.into_iter().chain(operator_events) {
        let summary = &mut report.summary;
        *summary.actors.entry(item.actor.clone()).or_default() += 1;
        for s in &event.subjects {
            match s.kind.as_str() {
                "document" | "chunk" => {
                    documents.insert(s.id.split('#').next().unwrap_or(&s.id).to_owned());
                }
                "session" => {
                    sessions.insert(s.id.clone());
                }
                "trace" => {
                    traces.insert(s.id.clone());
                }
                _ => {}
            }
        }
        if event.kind == EventKind::GuardLeak.as_str() {
            if event.tenant.as_deref() == Some(needle.as_str()) {
                summary.leaks_blocked_to_tenant += 1;
            } else {
                summary.leaks_blocked_of_tenant += 1;
            }
            summary.blocked += 1;
            report.blocked.push(item);
            continue;
        }
        let blocked_call = matches!(
            event.attrs.get("outcome"),
            Some(Attr::Text(o)) if o == "blocked"
        );
        if event.outcome == Outcome::Denied || blocked_call {
            if blocked_call {
                summary.blocked += 1;
            } else {
                summary.denied += 1;
            }
            report.blocked.push(item);
        } else if EventKind::parse(&event.kind).is_some_and(|k| READ_KINDS.contains(&k)) {
            summary.reads += 1;
            report.read.push(item);
        } else if event.kind == EventKind::ModelCall.as_str() {
            summary.model_calls_returned += 1;
            report.returned.push(item);
        } else {
            summary.other += 1;
            report.other.push(item);
        }
    }
    report.summary.documents = documents.into_iter().collect();
    report.summary.sessions = sessions.into_iter().collect();
    report.summary.traces = traces.into_iter().collect();
    Ok(report)
}

/// Whether an operator-log event concerns the tenant: about it, or a leak of its
/// data to someone else.
fn concerns(event: &AuditEvent, tenant: &str) -> bool {
    event.tenant.as_deref() == Some(tenant)
        || event
            .subjects
            .iter()
            .any(|s| s.kind == "owner_tenant" && s.id == tenant)
}

/// Signs a checkpoint of `log`, finds the window by binary search on entry times,
/// and returns the matching events with inclusion proofs against that checkpoint.
pub async fn read_window(
    app: &Services,
    log: &LogId,
    from: UnixMillis,
    to: UnixMillis,
    keep: impl Fn(&AuditEvent) -> bool,
) -> AppResult<(LogSection, Vec<(ImpactItem, AuditEvent)>)> {
    read_window_with(app, log, from, to, keep, true).await
}

/// `read_window`, optionally without the proofs (counting needs none).
pub async fn read_window_with(
    app: &Services,
    log: &LogId,
    from: UnixMillis,
    to: UnixMillis,
    keep: impl Fn(&AuditEvent) -> bool,
    proofs: bool,
) -> AppResult<(LogSection, Vec<(ImpactItem, AuditEvent)>)> {
    let signed = app.audit.sign(log).await.map_err(AppError::from)?;
    let size = signed.checkpoint.size;
    let store = app.vault.store();
    let start = first_at_or_after(app, log, size, UnixMillis(from.0 - CLOCK_SLACK_MS)).await?;
    let mut section = LogSection {
        checkpoint: signed.note.clone(),
        size,
        scanned: 0,
        truncated: false,
    };
    let which = match log {
        LogId::Operator => "operator",
        LogId::Tenant(_) => "tenant",
    };
    let mut out = Vec::new();
    let mut next = start;
    'scan: while next < size {
        if section.scanned >= ENTRIES_SCANNED_MAX {
            section.truncated = true;
            break;
        }
        let end = (next + SCAN_BATCH).min(size);
        let rows = store.audit_entries(log, next, end).await?;
        let views = app
            .audit
            .entries(log, next, end)
            .await
            .map_err(AppError::from)?;
        for (row, view) in rows.iter().zip(views) {
            section.scanned += 1;
            if row.created_at.0 > to.0 + CLOCK_SLACK_MS {
                break 'scan;
            }
            let Some(value) = view.event else { continue };
            let Ok(event) = serde_json::from_value::<AuditEvent>(value) else {
                continue;
            };
            let Some(time) = parse_time(&event.time) else {
                continue;
            };
            if time < from || time > to || !keep(&event) {
                continue;
            }
            let (leaf, proof) = if proofs {
                app.audit
                    .inclusion_proof(log, view.index, size)
                    .await
                    .map_err(AppError::from)?
            } else {
                (view.leaf_hash, Vec::new())
            };
            out.push((item(which, view.index, &event, &leaf, &proof), event));
        }
        next = end;
    }
    Ok((section, out))
}

/// The first index in `[0, size)` whose entry was stored at or after `at` (or
/// `size`): O(log n) one-row reads.
async fn first_at_or_after(
    app: &Services,
    log: &LogId,
    size: u64,
    at: UnixMillis,
) -> AppResult<u64> {
    let store = app.vault.store();
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let row = store.audit_entries(log, mid, mid + 1).await?;
        let created = row
            .first()
            .map(|r| r.created_at)
            .unwrap_or(UnixMillis(i64::MAX));
        if created < at {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

fn item(
    log: &str,
    index: u64,
    event: &AuditEvent,
    leaf: &bulkhead_ledger::Hash,
    proof: &[bulkhead_ledger::Hash],
) -> ImpactItem {
    ImpactItem {
        log: log.to_owned(),
        index,
        time: event.time.clone(),
        kind: event.kind.clone(),
        actor: event.actor.clone(),
        outcome: match event.outcome {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
        .to_owned(),
        reason: event.reason.clone(),
        subjects: event
            .subjects
            .iter()
            .map(|s| match &s.hash {
                Some(h) => format!("{}:{}@{h}", s.kind, s.id),
                None => format!("{}:{}", s.kind, s.id),
            })
            .collect(),
        attrs: event
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect(),
        leaf_hash: b64(leaf),
        proof: proof.iter().map(|h| b64(h)).collect(),
    }
}

pub fn parse_time(raw: &str) -> Option<UnixMillis> {
    let t =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .map(UnixMillis)
}

pub fn parse_bound(raw: &str, name: &str) -> AppResult<UnixMillis> {
    parse_time(raw).ok_or_else(|| {
        AppError::invalid(format!(
            "`{name}` must be an RFC 3339 time such as 2026-11-28T10:00:00Z, not {raw:?}"
        ))
    })
}

// ---- incidents ---------------------------------------------------------------

/// An incident: a tenant and a window under investigation, opened by an operator
/// or automatically by a critical alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub id: String,
    pub title: String,
    pub tenant: TenantId,
    /// Other tenants involved (e.g. the owners of leaked data).
    #[serde(default)]
    pub related_tenants: Vec<String>,
    pub from: String,
    pub to: String,
    pub opened_at: String,
    pub opened_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    pub status: IncidentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

/// Incidents kept (bounded) in memory; each is also in the operator log.
#[derive(Debug, Default)]
pub struct Incidents {
    kept: Mutex<VecDeque<Incident>>,
}

impl Incidents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Incident> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().rev().take(limit).cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Incident> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|i| i.id == id).cloned()
    }

    fn keep(&self, incident: Incident) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == INCIDENTS_MAX {
            kept.pop_front();
        }
        kept.push_back(incident);
    }

    pub fn close(&self, id: &str, at: String) -> Option<Incident> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let incident = kept.iter_mut().find(|i| i.id == id)?;
        incident.status = IncidentStatus::Closed;
        incident.closed_at = Some(at);
        Some(incident.clone())
    }
}

/// What opening an incident needs.
#[derive(Debug)]
pub struct NewIncident {
    pub title: String,
    pub tenant: TenantId,
    pub related_tenants: Vec<String>,
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub actor: String,
    pub alert_id: Option<String>,
}

/// Opens an incident: kept for the endpoint and the dashboard, and logged in the
/// operator log (`incident.open`) and the tenant's own.
pub async fn open(app: &Services, rid: &RequestId, new: NewIncident) -> AppResult<Incident> {
    let bytes: [u8; 12] = bulkhead_crypto::random_array().map_err(|_| AppError::Internal)?;
    let incident = Incident {
        id: format!("inc_{}", bulkhead_types::hex_lower(&bytes)),
        title: new.title,
        tenant: new.tenant.clone(),
        related_tenants: new.related_tenants,
        from: new.from.rfc3339(),
        to: new.to.rfc3339(),
        opened_at: app.vault.now().rfc3339(),
        opened_by: new.actor.clone(),
        alert_id: new.alert_id,
        status: IncidentStatus::Open,
        closed_at: None,
    };
    let mut trail = Trail::new(app, EventKind::IncidentOpen, new.actor, rid)
        .subject(Subject::new("incident", &*incident.id))
        .attr("from", Attr::Text(incident.from.clone()))
        .attr("to", Attr::Text(incident.to.clone()));
    if let Some(alert) = &incident.alert_id {
        trail = trail.subject(Subject::new("alert", &**alert));
    }
    trail.record_admin(Some(&new.tenant)).await?;
    tracing::warn!(incident = %incident.id, tenant = %incident.tenant,
        "incident opened; its impact report: `bulkhead incident show {}`", incident.id);
    app.incidents.keep(incident.clone());
    Ok(incident)
}
