//! The per-tenant evidence report: what an auditor asks for, gathered and checked
//! by the server at the moment of asking — encryption and key versions, the
//! tenant's audit log re-verified (root recomputed from every leaf, checkpoint
//! signature checked), residency, retention settings and the last sweep, erasures,
//! alerts and incidents — as JSON for machines and as one HTML page for people.
//!
//! It is built from metadata and the logs; it never holds a document, a prompt or
//! an answer. Every figure is read or recomputed, not configured: a report that
//! says "verified" has just verified. Must never: do unbounded work (log
//! verification stops at `VERIFY_LEAVES_MAX` leaves and says so; the activity
//! scan shares the impact report's bound).

use std::collections::BTreeMap;

use bulkhead_audit::{Attr, Outcome};
use bulkhead_ledger::event::AuditEvent;
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_ledger::{CompactRange, checkpoint::Checkpoint};
use bulkhead_types::{LogId, TenantId, UnixMillis};
use bulkhead_vault::Tenant;
use serde::{Deserialize, Serialize};

use crate::alerts::Alert;
use crate::error::{AppError, AppResult};
use crate::incident::{Incident, read_window_with};
use crate::kinds::EventKind;
use crate::services::Services;

/// Leaves re-hashed per log verification, at most.
const VERIFY_LEAVES_MAX: u64 = 20_000_000;
/// Leaf hashes fetched (and hashed on the async thread, well under a
/// millisecond) per store read while verifying.
const VERIFY_BATCH: u64 = 2048;
/// Records counted as waiting for re-sealing, at most.
const RESEAL_COUNT_MAX: u32 = 10_000;
/// The default period of the activity section.
pub const DEFAULT_PERIOD_DAYS: i64 = 90;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TenantSection {
    pub id: String,
    pub name: String,
    pub region: String,
    pub policy: String,
    pub policy_description: String,
    pub status: String,
    pub created_at: String,
    /// The model allow-list; `None`: every model of the region.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyVersionRow {
    pub version: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EncryptionSection {
    pub aead: String,
    /// What each ciphertext is bound to (associated data).
    pub binding: String,
    /// Where the master key that wraps the data keys comes from.
    pub master_key_source: String,
    pub current_key_version: u32,
    /// The data key versions that still exist (older ones are destroyed once
    /// nothing is sealed under them).
    pub key_versions: Vec<KeyVersionRow>,
    /// Records still sealed under an older version (re-sealing after a rotation).
    pub records_pending_reseal: u64,
}

/// The outcome of re-verifying one log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogVerification {
    pub ok: bool,
    pub size: u64,
    pub signature_ok: bool,
    pub root_matches: bool,
    pub leaves_checked: u64,
    /// What failed, or what was checked.
    pub detail: String,
    /// The checkpoint (C2SP signed note) verified against.
    pub checkpoint: String,
    pub verified_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditSection {
    pub tenant_log: LogVerification,
    pub operator_log: LogVerification,
    /// When the tenant log's first entry was written.
    pub first_entry_at: Option<String>,
    /// The pack's floor, and whether the deployment meets it (entries are never
    /// deleted by the server, so it holds unless someone removed rows — which
    /// verification would show).
    pub retention_days_min: u32,
    pub retention_met: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamRow {
    pub name: String,
    pub region: Option<String>,
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResidencySection {
    pub region: String,
    /// Where the tenant's rows are stored.
    pub store: String,
    /// The pack's allowed region patterns; empty: any.
    pub required_regions: Vec<String>,
    pub allowed: bool,
    /// The upstreams the tenant's requests can reach: only its region's.
    pub upstreams: Vec<UpstreamRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetentionSection {
    pub pack: String,
    pub document_ttl_secs_default: Option<u64>,
    pub document_ttl_secs_max: Option<u64>,
    pub session_ttl_secs: Option<u64>,
    pub trace_ttl_secs: Option<u64>,
    pub last_sweep: Option<crate::retention::LastSweep>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErasureSection {
    pub documents_deleted: u64,
    pub sessions_sanitized: u64,
    /// Rows the sweeper deleted when their time ran out.
    pub records_expired: u64,
    pub exports: u64,
    pub last_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActivitySection {
    pub from: String,
    pub to: String,
    /// Events of the tenant's log in the period, by kind.
    pub events: BTreeMap<String, u64>,
    pub denied: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineSection {
    pub hash: String,
    pub approved_hash: String,
    pub drift: bool,
}

/// The evidence report of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvidenceReport {
    pub version: u32,
    pub generated_at: String,
    pub server: String,
    /// The server's verifier key, to check the checkpoints offline.
    pub vkey: String,
    /// What needs attention, one sentence each; empty when all is in order.
    pub findings: Vec<String>,
    pub tenant: TenantSection,
    pub encryption: EncryptionSection,
    pub audit: AuditSection,
    pub residency: ResidencySection,
    pub retention: RetentionSection,
    pub erasures: ErasureSection,
    pub activity: ActivitySection,
    pub alerts: Vec<Alert>,
    pub incidents: Vec<Incident>,
    pub policy_baseline: BaselineSection,
}

/// Re-verifies a log: signs a fresh checkpoint, checks its signature with the
/// server's verifier key, and recomputes the root from every stored leaf hash.
pub async fn verify_log(app: &Services, log: &LogId) -> AppResult<LogVerification> {
    let signed = app.audit.sign(log).await.map_err(AppError::from)?;
    let verified_at = app.vault.now().rfc3339();
    let mut v = LogVerification {
        ok: false,
        size: signed.checkpoint.size,
        signature_ok: false,
        root_matches: false,
        leaves_checked: 0,
        detail: String::new(),
        checkpoint: signed.note.clone(),
        verified_at,
    };
    let claimed = NoteVerifier::from_vkey(&app.audit.vkey())
        .ok()
        .and_then(|verifier| verifier.open(&signed.note).ok().map(str::to_owned))
        .and_then(|body| Checkpoint::parse_body(&body).ok());
    let Some(claimed) = claimed else {
        v.detail = "the checkpoint's signature does not verify with the server's key".into();
        return Ok(v);
    };
    v.signature_ok = true;
    if claimed.size > VERIFY_LEAVES_MAX {
        v.detail = format!(
            "the log has {} entries; verification here stops at {VERIFY_LEAVES_MAX} — run `bulkhead audit verify` for the whole log",
            claimed.size
        );
        return Ok(v);
    }
    let root = match recompute_root(app, log, claimed.size).await {
        Ok(root) => root,
        Err(detail) => {
            v.detail = detail;
            return Ok(v);
        }
    };
    v.leaves_checked = claimed.size;
    v.root_matches = root == claimed.root;
    v.ok = v.root_matches;
    v.detail = if v.ok {
        format!(
            "{} entries re-hashed; the root matches the signed checkpoint",
            v.leaves_checked
        )
    } else {
        "the root recomputed from the stored entries differs from the signed checkpoint: the log was altered".into()
    };
    Ok(v)
}

/// The Merkle root of the log's first `size` entries, recomputed from the stored
/// leaf hashes in pages (memory stays one page and one compact range). Shared by
/// the evidence report and the dashboard's "verify now". The error says what is
/// wrong with the stored entries.
pub async fn recompute_root(
    app: &Services,
    log: &LogId,
    size: u64,
) -> Result<bulkhead_ledger::Hash, String> {
    let store = app.vault.store();
    let mut range = CompactRange::new();
    let mut next = 0;
    while next < size {
        let end = (next + VERIFY_BATCH).min(size);
        let leaves = store
            .audit_leaf_hashes(log, next, end)
            .await
            .map_err(|e| format!("the entries could not be read: {e}"))?;
        if leaves.len() as u64 != end - next {
            return Err(format!(
                "entries {next}..{end} are missing from the store ({} of {} found)",
                leaves.len(),
                end - next
            ));
        }
        for leaf in leaves {
            let leaf = <[u8; 32]>::try_from(leaf.as_slice()).map_err(|_| {
                format!("entry {}: a stored leaf hash is not 32 bytes", range.size())
            })?;
            range.push(leaf);
        }
        next = end;
    }
    Ok(range.root())
}

/// Builds the evidence report of `tenant`; the activity section covers
/// `[from, to]`. Sections are gathered in a fixed order (keys, audit logs,
/// residency, retention, activity, alerts, incidents, drift), then the findings
/// are drawn from them.
pub async fn report(
    app: &Services,
    tenant_id: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
) -> AppResult<EvidenceReport> {
    let tenant = app.vault.tenant(tenant_id).await?;
    let pack = app.packs.for_tenant(&tenant.policy);
    let needle = tenant_id.to_string();

    let encryption = encryption_section(app, tenant_id, &tenant).await?;
    let tenant_log = LogId::Tenant(tenant_id.clone());
    let audit = audit_section(app, &tenant_log, &pack).await?;
    let residency = residency_section(app, tenant_id, &tenant, &pack).await?;
    let retention = retention_section(app, &pack);
    let (activity, erasures) = activity_sections(app, &tenant_log, from, to).await?;

    let alerts: Vec<Alert> = app
        .alerts
        .recent(1000)
        .into_iter()
        .filter(|a| a.tenant.as_ref() == Some(tenant_id) || a.related.contains(&needle))
        .collect();
    let incidents: Vec<Incident> = app
        .incidents
        .recent(1000)
        .into_iter()
        .filter(|i| &i.tenant == tenant_id || i.related_tenants.contains(&needle))
        .collect();
    let drift = crate::drift::status(app).await?;

    let mut report = EvidenceReport {
        version: 1,
        generated_at: app.vault.now().rfc3339(),
        server: app.audit.server_name().to_owned(),
        vkey: app.audit.vkey(),
        findings: Vec::new(),
        tenant: TenantSection {
            id: needle,
            name: tenant.name.clone(),
            region: tenant.region.to_string(),
            policy: tenant.policy.to_string(),
            policy_description: pack.description.clone(),
            status: tenant.status.as_str().to_owned(),
            created_at: tenant.created_at.rfc3339(),
            models: tenant.models.clone(),
        },
        encryption,
        audit,
        residency,
        retention,
        erasures,
        activity,
        alerts,
        incidents,
        policy_baseline: BaselineSection {
            hash: drift.hash,
            approved_hash: drift.approved_hash,
            drift: drift.drift,
        },
    };
    report.findings = findings(&report, tenant.status, &drift.changed);
    Ok(report)
}

/// The encryption section: the cipher, the tenant's key versions and how many
/// records still wait for re-sealing under the current one.
async fn encryption_section(
    app: &Services,
    tenant_id: &TenantId,
    tenant: &Tenant,
) -> AppResult<EncryptionSection> {
    let store = app.vault.store();
    let keys = store.data_keys(tenant_id).await?;
    let pending = store
        .records_sealed_below(tenant_id, tenant.current_key_version, RESEAL_COUNT_MAX)
        .await?
        .len() as u64;
    Ok(EncryptionSection {
        aead: "XAES-256-GCM, a fresh 192-bit nonce per record".into(),
        binding: "tenant id, record kind, record id and key version (associated data): a row moved to another tenant or kind does not open".into(),
        master_key_source: app.vault.master_key_source().to_owned(),
        current_key_version: tenant.current_key_version.get(),
        key_versions: keys
            .iter()
            .map(|k| KeyVersionRow {
                version: k.version.get(),
                created_at: k.created_at.rfc3339(),
            })
            .collect(),
        records_pending_reseal: pending,
    })
}

/// The audit section: the tenant's and the operator's logs, each verified now.
async fn audit_section(
    app: &Services,
    tenant_log: &LogId,
    pack: &crate::packs::Pack,
) -> AppResult<AuditSection> {
    let first_entry_at = app
        .vault
        .store()
        .audit_entries(tenant_log, 0, 1)
        .await?
        .first()
        .map(|e| e.created_at.rfc3339());
    Ok(AuditSection {
        tenant_log: verify_log(app, tenant_log).await?,
        operator_log: verify_log(app, &LogId::Operator).await?,
        first_entry_at,
        retention_days_min: pack.retention.audit_retention_days_min,
        retention_met: true,
    })
}

/// The residency section: where the tenant's data and its upstreams are, and
/// whether its policy allows that region.
async fn residency_section(
    app: &Services,
    tenant_id: &TenantId,
    tenant: &Tenant,
    pack: &crate::packs::Pack,
) -> AppResult<ResidencySection> {
    Ok(ResidencySection {
        region: tenant.region.to_string(),
        store: app.vault.store().placement(tenant_id).await?,
        required_regions: pack.residency.regions.clone(),
        allowed: pack.residency.allows(&tenant.region),
        upstreams: upstream_rows(app, tenant),
    })
}

/// The retention section: the pack's settings and the last sweep.
fn retention_section(app: &Services, pack: &crate::packs::Pack) -> RetentionSection {
    RetentionSection {
        pack: pack.name.clone(),
        document_ttl_secs_default: pack.retention.document_ttl_secs_default,
        document_ttl_secs_max: pack.retention.document_ttl_secs_max,
        session_ttl_secs: pack.retention.session_ttl_secs,
        trace_ttl_secs: pack.retention.trace_ttl_secs,
        last_sweep: app.sweeps.last(),
    }
}

/// The activity and erasure sections, from one read of the tenant's log over
/// `[from, to]`: events by kind, denials, and what was erased or exported.
async fn activity_sections(
    app: &Services,
    tenant_log: &LogId,
    from: UnixMillis,
    to: UnixMillis,
) -> AppResult<(ActivitySection, ErasureSection)> {
    let (section, events) = read_window_with(app, tenant_log, from, to, |_| true, false).await?;
    let mut activity = ActivitySection {
        from: from.rfc3339(),
        to: to.rfc3339(),
        truncated: section.truncated,
        ..ActivitySection::default()
    };
    let mut erasures = ErasureSection::default();
    for (_, event) in &events {
        *activity.events.entry(event.kind.clone()).or_default() += 1;
        if event.outcome == Outcome::Denied {
            activity.denied += 1;
            continue;
        }
        if count_erasure(&mut erasures, event) {
            erasures.last_at = Some(event.time.clone());
        }
    }
    Ok((activity, erasures))
}

/// Counts one allowed event in the erasure section; true when it erased
/// something (an export is counted but erases nothing).
fn count_erasure(erasures: &mut ErasureSection, event: &AuditEvent) -> bool {
    match EventKind::parse(&event.kind) {
        Some(EventKind::DocumentDelete) => {
            erasures.documents_deleted += 1;
            true
        }
        Some(EventKind::SessionSanitize) => {
            erasures.sessions_sanitized += 1;
            true
        }
        Some(EventKind::RetentionExpired) => {
            erasures.records_expired += event
                .attrs
                .iter()
                .filter(|(k, _)| k.starts_with("deleted."))
                .map(|(_, v)| match v {
                    Attr::Int(n) => u64::try_from(*n).unwrap_or(0),
                    _ => 0,
                })
                .sum::<u64>();
            true
        }
        Some(EventKind::TenantExport) => {
            erasures.exports += 1;
            false
        }
        _ => false,
    }
}

/// What an auditor should look at first, drawn from the gathered sections (the
/// tenant's status and the drifted policy fields are not in them as such).
fn findings(
    report: &EvidenceReport,
    status: bulkhead_types::TenantStatus,
    drift_changed: &[String],
) -> Vec<String> {
    let (audit, residency) = (&report.audit, &report.residency);
    let mut findings = Vec::new();
    for (name, v) in [
        ("tenant", &audit.tenant_log),
        ("operator", &audit.operator_log),
    ] {
        if !v.ok {
            findings.push(format!(
                "The {name} audit log did not verify: {}.",
                v.detail
            ));
        }
    }
    if !residency.allowed {
        findings.push(format!(
            "The tenant's region `{}` is not allowed by its policy `{}` (requires {}).",
            residency.region,
            report.retention.pack,
            residency.required_regions.join(" or ")
        ));
    }
    if report.encryption.records_pending_reseal > 0 {
        findings.push(format!(
            "{} record(s) are still sealed under an older data key; re-sealing is in progress.",
            report.encryption.records_pending_reseal
        ));
    }
    if status != bulkhead_types::TenantStatus::Active {
        findings.push("The tenant is quarantined.".into());
    }
    let open = report
        .incidents
        .iter()
        .filter(|i| i.status == "open")
        .count();
    if open > 0 {
        findings.push(format!(
            "{open} incident(s) concerning this tenant are open."
        ));
    }
    if report.policy_baseline.drift {
        findings.push(format!(
            "The server's isolation policy differs from the approved baseline in: {}.",
            drift_changed.join(", ")
        ));
    }
    if report.activity.truncated {
        findings
            .push("The activity period held more events than one report reads; narrow it.".into());
    }
    findings
}

/// The upstreams the tenant may reach, one row each with its models.
fn upstream_rows(app: &Services, tenant: &Tenant) -> Vec<UpstreamRow> {
    app.gateway
        .gateway
        .models_for(&tenant.region, tenant.models.as_deref())
        .iter()
        .fold(Vec::<UpstreamRow>::new(), |mut rows, route| {
            let name = route.upstream.name().to_owned();
            match rows.iter_mut().find(|r| r.name == name) {
                Some(row) => row.models.push(route.model.to_owned()),
                None => rows.push(UpstreamRow {
                    name,
                    region: route
                        .upstream
                        .config
                        .region
                        .as_ref()
                        .map(ToString::to_string),
                    models: vec![route.model.to_owned()],
                }),
            }
            rows
        })
}
