//! The output guard's state kept in step with the store (canaries seeded at
//! tenant creation, fingerprints on every document write and delete, both
//! rebuilt at start, synced between replicas), protection of what tenants send,
//! and what happens when a leak is caught.
//!
//! A response for tenant A that carries another tenant's canary or exclusive
//! fingerprints is blocked (invariant 3); the hit goes into A's audit log (types
//! and counts, never the text) and, with the owning tenant named, into the operator
//! log, and is logged as a warning for operators. A's client is never told whose
//! data it matched.

use std::sync::Arc;

use bulkhead_audit::{Attr, Subject};
use bulkhead_guard::{Finding, FindingKind, Guard, Policy};
use bulkhead_types::{DocumentId, LogId, TenantId};
use bulkhead_vault::{TenantCtx, Vault};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{AppError, AppResult};
use crate::kinds::{AlertKind, EventKind, Severity};
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// The guard, and the policy of tenants whose pack is unknown (requests apply the
/// tenant's compliance pack, `Services::packs`).
#[derive(Debug)]
pub struct GuardState {
    pub guard: Guard,
    pub policy: Policy,
    pub text_bytes_max: usize,
    /// How long what a tenant sends through stays protected, unless its pack says
    /// otherwise (`retention.prompt_window_secs`).
    pub prompt_window_ms: i64,
    /// `/v1/guard/scan` answers that matched another tenant, per key per minute.
    scan_hits: std::sync::Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

/// A record generation (`Store::record_generation`): the largest seq and the
/// count of a tenant's rows of one kind.
pub type Generation = (i64, u64);

/// What a replica's guard sync remembers between passes.
#[derive(Debug, Default)]
pub struct SyncSeen {
    /// Per tenant, the record generations of its documents and of its protected
    /// prompts that this replica last loaded.
    pub loaded: std::collections::HashMap<TenantId, (Generation, Generation)>,
    /// Per tenant whose last reloads failed, how many passes in a row.
    pub failures: std::collections::HashMap<TenantId, u32>,
}

/// What one pass of `GuardState::sync_shared` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Tenants (re)loaded, in whole or only their new protected prompts.
    pub reloaded: usize,
    /// Tenants whose reload failed, each with its failures in a row (this one
    /// included); each keeps what this replica held of it.
    pub failed: Vec<(TenantId, u32)>,
    /// Erased tenants forgotten.
    pub forgotten: Vec<TenantId>,
}

/// Passes in a row a tenant's guard reload may fail before an alert is raised.
pub const SYNC_FAILURES_ALERT: u32 = 3;

/// Cross-tenant hits one key may get from `/v1/guard/scan` per minute before it is
/// refused (429): the endpoint must not become an oracle for what others hold.
pub const SCAN_HITS_PER_MINUTE_MAX: u32 = 5;
/// Keys tracked by that limiter at once (the oldest minute's entries go first).
const SCAN_HIT_KEYS_MAX: usize = 10_000;
/// Above this much text to protect, the evidence is computed off the runtime.
const PROTECT_INLINE_BYTES_MAX: usize = 16 << 10;
/// Documents opened per page when a whole tenant is read back (start-up rebuild,
/// replica sync). A document is at most 1 MiB, so a page holds at most 16 MiB of
/// opened text beside the fingerprints, whatever the tenant stores.
const DOCUMENT_PAGE: u32 = 16;

impl GuardState {
    /// The guard with its fingerprint key derived from the server secret, and the
    /// default policy.
    pub fn new(vault: &Vault) -> Self {
        Self::with_prompt_window(
            vault,
            bulkhead_guard::GuardLimits::default().ephemeral_ttl_ms / 1000,
        )
    }

    /// The guard with the server-wide protection window for what tenants send.
    pub fn with_prompt_window(vault: &Vault, prompt_window_secs: i64) -> Self {
        let key = vault.derive_server_key("bulkhead/guard-fingerprints/v1");
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(key.expose());
        let limits = bulkhead_guard::GuardLimits {
            ephemeral_ttl_ms: prompt_window_secs.saturating_mul(1000),
            ..bulkhead_guard::GuardLimits::default()
        };
        let guard = Guard::new(bytes, limits);
        bulkhead_crypto::wipe(&mut bytes);
        Self {
            guard,
            policy: Policy::default(),
            text_bytes_max: 1 << 20,
            prompt_window_ms: prompt_window_secs.saturating_mul(1000),
            scan_hits: std::sync::Mutex::default(),
        }
    }

    /// Counts a cross-tenant hit of `/v1/guard/scan` for a key; false once the key
    /// is past `SCAN_HITS_PER_MINUTE_MAX` this minute.
    pub fn scan_hit_allowed(&self, key: &str, now_ms: i64) -> bool {
        let minute = now_ms / 60_000;
        let mut g = self
            .scan_hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() >= SCAN_HIT_KEYS_MAX {
            g.retain(|_, (m, _)| *m == minute);
        }
        let entry = g.entry(key.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= SCAN_HITS_PER_MINUTE_MAX
    }

    /// Whether a key is already past the scan limit this minute.
    pub fn scan_refused(&self, key: &str, now_ms: i64) -> bool {
        let g = self
            .scan_hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.get(key)
            .is_some_and(|(m, n)| *m == now_ms / 60_000 && *n >= SCAN_HITS_PER_MINUTE_MAX)
    }

    /// Loads a tenant's stored evidence of ephemeral content (after a restart, or
    /// written by another replica). Evidence already known is skipped.
    async fn load_evidence(&self, vault: &Vault, tenant: &TenantId) -> anyhow::Result<usize> {
        let now = vault.now().0;
        let (mut n, mut after) = (0, 0);
        loop {
            let page = vault.guard_evidence_page(tenant, after, 256).await?;
            for body in &page.items {
                match bulkhead_guard::Evidence::from_bytes(body) {
                    Some(ev) => {
                        self.guard.load_evidence(tenant, &ev, now);
                        n += 1;
                    }
                    None => tracing::warn!(tenant = %tenant,
                        "a stored guard evidence record has an unknown format; it is ignored"),
                }
            }
            match page.next {
                Some(next) => after = next,
                None => return Ok(n),
            }
        }
    }

    /// Gives a new tenant its first canary, stored sealed so it survives restarts.
    pub async fn seed_tenant(&self, vault: &Vault, tenant: &TenantId) -> AppResult<()> {
        let token = Zeroizing::new(self.guard.seed_canary(tenant).map_err(|e| {
            tracing::error!(error = %e, "could not seed a canary");
            AppError::Internal
        })?);
        vault.put_canary(tenant, &token).await?;
        Ok(())
    }

    /// Adds a stored document's fingerprints. A document too large for the guard
    /// is stored anyway and logged: its leaks are then caught by canaries only.
    pub async fn index(&self, tenant: &TenantId, id: &DocumentId, text: &str) {
        if let Err(e) = self.guard.index_document(tenant, id, text) {
            tracing::warn!(tenant = %tenant, error = %e, "document not fingerprinted; cross-tenant detection relies on canaries for it");
        }
    }

    pub fn unindex(&self, tenant: &TenantId, id: &DocumentId, text: &str) {
        if let Err(e) = self.guard.remove_document(tenant, id, text) {
            tracing::warn!(tenant = %tenant, error = %e, "document fingerprints not removed");
        }
    }

    /// Forgets an erased tenant (a sweep of the map, off the async runtime).
    pub async fn forget(self: &Arc<Self>, tenant: &TenantId) {
        let (me, tenant) = (Arc::clone(self), tenant.clone());
        let _ = tokio::task::spawn_blocking(move || me.guard.remove_tenant(&tenant)).await;
    }

    /// On a store shared by several replicas: brings this replica's canaries and
    /// fingerprints up to date with tenants and documents that other replicas
    /// created, changed or erased. Per tenant, the documents' record generation
    /// is compared with the one last loaded; a tenant whose documents moved (or a
    /// new tenant) is reloaded, an erased one forgotten. Between a write on
    /// another replica and the next sync, this replica scans with what it had
    /// (canaries of tenants it knows, older fingerprints): the bounded delay is
    /// the sync interval.
    ///
    /// A reload builds the tenant's new set beside the old one and swaps it in
    /// (`Guard::replace_tenant`): a scan meanwhile sees one or the other, never
    /// neither. A tenant whose reload fails keeps its old set and generation (so
    /// the next pass retries it), its consecutive failures are counted in
    /// `seen`, and the pass goes on with the next tenant. Only a failure to list
    /// tenants ends the pass (and then nothing is forgotten).
    pub async fn sync_shared(
        self: &Arc<Self>,
        vault: &Vault,
        seen: &mut SyncSeen,
    ) -> anyhow::Result<SyncReport> {
        let mut present = std::collections::HashSet::new();
        let mut report = SyncReport::default();
        let mut cursor = None::<String>;
        loop {
            let (page, next) = vault.list_tenants(cursor.as_deref(), 100).await?;
            for tenant in &page {
                present.insert(tenant.id.clone());
                match self.sync_tenant(vault, &tenant.id, seen).await {
                    Ok(true) => {
                        seen.failures.remove(&tenant.id);
                        report.reloaded += 1;
                    }
                    Ok(false) => {
                        seen.failures.remove(&tenant.id);
                    }
                    Err(e) => {
                        let n = seen.failures.entry(tenant.id.clone()).or_insert(0);
                        *n = n.saturating_add(1);
                        tracing::warn!(tenant = %tenant.id, consecutive_failures = *n, error = %e,
                            "the output guard could not reload this tenant from the store; it keeps the tenant's previous canaries and fingerprints and retries at the next sync");
                        report.failed.push((tenant.id.clone(), *n));
                    }
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let gone: Vec<TenantId> = seen
            .loaded
            .keys()
            .chain(seen.failures.keys())
            .filter(|t| !present.contains(*t))
            .cloned()
            .collect();
        for tenant in gone {
            self.guard.remove_tenant(&tenant);
            seen.loaded.remove(&tenant);
            seen.failures.remove(&tenant);
            report.forgotten.push(tenant);
        }
        Ok(report)
    }

    /// One tenant's part of `sync_shared`: whether it was reloaded.
    async fn sync_tenant(
        self: &Arc<Self>,
        vault: &Vault,
        tenant: &TenantId,
        seen: &mut SyncSeen,
    ) -> anyhow::Result<bool> {
        let generation = vault
            .store()
            .record_generation(tenant, bulkhead_types::RecordKind::DOCUMENT)
            .await?;
        let evidence = vault
            .store()
            .record_generation(tenant, bulkhead_types::RecordKind::GUARD_EVIDENCE)
            .await?;
        if let Some((g, e)) = seen.loaded.get(tenant)
            && *g == generation
        {
            if *e == evidence {
                return Ok(false);
            }
            // Documents unchanged: only new protected prompts to add (known
            // ones are skipped).
            self.load_evidence(vault, tenant).await?;
            seen.loaded.insert(tenant.clone(), (generation, evidence));
            return Ok(true);
        }
        // Build the tenant's set as stored beside what this replica holds, then
        // swap it in: until the swap, scans use the old set.
        let mut build = self.guard.tenant_build();
        for token in &vault.canaries(tenant).await? {
            build.add_canary(token)?;
        }
        let mut after = 0;
        loop {
            let page = vault.documents_page(tenant, after, DOCUMENT_PAGE).await?;
            for doc in &page.items {
                if let Err(e) = build.add_document(&doc.id, &doc.text) {
                    tracing::warn!(tenant = %tenant, error = %e, "document not fingerprinted; cross-tenant detection relies on canaries for it");
                }
            }
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
        let (me, t) = (Arc::clone(self), tenant.clone());
        tokio::task::spawn_blocking(move || me.guard.replace_tenant(&t, build)).await??;
        self.load_evidence(vault, tenant).await?;
        seen.loaded.insert(tenant.clone(), (generation, evidence));
        Ok(true)
    }

    /// Rebuilds canaries and fingerprints from the store, tenant by tenant and
    /// page by page (a tenant's documents are never all in memory at once), and
    /// seeds a canary for any tenant that has none. Logs progress: on a large
    /// deployment this reads every document once.
    pub async fn rebuild(&self, vault: &Vault) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let (mut tenants, mut documents, mut cursor) = (0usize, 0usize, None::<String>);
        let mut ephemeral = 0usize;
        loop {
            let (page, next) = vault.list_tenants(cursor.as_deref(), 100).await?;
            for tenant in &page {
                let canaries = vault.canaries(&tenant.id).await?;
                if canaries.is_empty() {
                    self.seed_tenant(vault, &tenant.id)
                        .await
                        .map_err(|e| anyhow::anyhow!("seed a canary: {e}"))?;
                }
                for token in &canaries {
                    self.guard.add_canary(&tenant.id, token)?;
                }
                let mut after = 0;
                loop {
                    let page = vault
                        .documents_page(&tenant.id, after, DOCUMENT_PAGE)
                        .await?;
                    for doc in &page.items {
                        self.index(&tenant.id, &doc.id, &doc.text).await;
                        documents += 1;
                    }
                    match page.next {
                        Some(next) => after = next,
                        None => break,
                    }
                }
                ephemeral += self.load_evidence(vault, &tenant.id).await?;
                tenants += 1;
                if tenants.is_multiple_of(1000) {
                    tracing::info!(
                        tenants,
                        documents,
                        "rebuilding the output guard's fingerprints…"
                    );
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        tracing::info!(
            tenants,
            documents,
            ephemeral,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "output guard ready: canaries, document evidence and protected prompts of every tenant loaded"
        );
        Ok(())
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Text about to be sent to the tenant (a model's answer): leak, PII and
    /// secret detection, redaction, blocking.
    #[default]
    Output,
    /// The tenant's own message to a model: injection screening.
    Input,
    /// Retrieved context about to enter a prompt: injection screening.
    Context,
}

impl Direction {
    /// The name the audit log records (the same as serde's).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Input => "input",
            Self::Context => "context",
        }
    }
}

pub fn kind_name(kind: &FindingKind) -> String {
    kind.to_string()
}

/// Counts of finding types, for the audit log: never the text.
pub fn type_counts(findings: &[Finding]) -> std::collections::BTreeMap<String, i64> {
    let mut counts = std::collections::BTreeMap::new();
    for f in findings {
        *counts.entry(kind_name(&f.kind)).or_insert(0) += 1;
    }
    counts
}

/// The other tenants whose data the findings matched, sorted, once each.
pub fn leak_owners(findings: &[Finding]) -> Vec<TenantId> {
    let mut owners: Vec<TenantId> = findings.iter().filter_map(|f| f.owner.clone()).collect();
    owners.sort();
    owners.dedup();
    owners
}

/// Where a text the guard found another tenant's data in came from: that decides
/// whose alarm the finding is.
#[derive(Debug, Clone, Copy)]
pub enum LeakSource<'a> {
    /// A model's answer to this upstream body: everything the model was given
    /// for the requester (its prompt, tool results, session history, retrieved
    /// context). Foreign data the body itself carried came in through the
    /// requester (`supplied_owners`).
    ModelAnswer(&'a serde_json::Map<String, serde_json::Value>),
    /// A text the requester sent to `/v1/guard/scan`: Bulkhead delivered
    /// nothing and cannot tell what produced it, so a hit is alerted but never
    /// contained.
    ScanRequest,
}

/// Invariant 3: a leak is blocked (by the caller), logged where the operator sees
/// whose data it was, and raised loudly. The requesting tenant's own log gets the
/// denial from the caller's event; nothing here names the owner to it.
///
/// Who sent the foreign text is weighed first (framing): an owner whose data
/// the model's input already carried (`LeakSource::ModelAnswer`) was not leaked
/// by the shared stack — the requester supplied it, or the owner planted it in
/// the requester's documents or prompts. For those owners the operator log gets
/// the block with `attribution: requester_input` and a warning
/// `foreign_data_supplied` alert; no `cross_tenant_leak`, no incident, no
/// containment of the requester. The other owners' data is a leak: a critical
/// alert (repeats within the dedupe window are counted on the first), an
/// incident for a new alert, and containment as configured.
pub async fn report_leak(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    pack: &Arc<crate::packs::Pack>,
    findings: &[Finding],
    source: LeakSource<'_>,
) -> AppResult<()> {
    let owners = leak_owners(findings);
    if owners.is_empty() {
        return Ok(());
    }
    app.telemetry.leak_blocked();
    let supplied = match source {
        LeakSource::ModelAnswer(body) => supplied_owners(app, ctx.tenant(), pack, body).await,
        LeakSource::ScanRequest => std::collections::BTreeSet::new(),
    };
    let (from_input, leaked): (Vec<TenantId>, Vec<TenantId>) =
        owners.into_iter().partition(|o| supplied.contains(o));
    if !from_input.is_empty() {
        report_supplied(app, ctx, rid, &from_input, findings).await?;
    }
    if leaked.is_empty() {
        return Ok(());
    }
    tracing::warn!(tenant = %ctx.tenant(), owners = leaked.len(), request_id = %rid.0,
        "CROSS-TENANT LEAK BLOCKED: a text for this tenant carried another tenant's canary or \
         fingerprints. See the operator audit log; consider quarantining the upstream or the tenant.");
    leak_entry(app, ctx, rid, &leaked, findings, "upstream").await?;
    let mut raised = crate::alerts::new_alert(
        AlertKind::CrossTenantLeak,
        Severity::Critical,
        Some(ctx.tenant()),
        format!(
            "an answer for this tenant carried data of {} other tenant(s) (canary or fingerprints) and was blocked; \
             check the upstream model for shared caching or memorisation, and consider quarantining the key or tenant",
            leaked.len()
        ),
        app.vault.now().rfc3339(),
    );
    raised.related = leaked.iter().map(ToString::to_string).collect();
    raised.dedupe_key = raised.related.join(",");
    raised.related.push(rid.0.clone());
    let alert_id = raised.id.clone();
    if app.alerts.raise(app, rid, raised).await == crate::alerts::Raised::New {
        // A confirmed leak is an incident at once: the window starts an hour
        // back so the report shows what led up to it. A repeat of the same
        // alert is the same incident.
        let now = app.vault.now();
        crate::incident::open(
            app,
            rid,
            crate::incident::NewIncident {
                title: "cross-tenant leak blocked".into(),
                tenant: ctx.tenant().clone(),
                related_tenants: leaked.iter().map(ToString::to_string).collect(),
                from: bulkhead_types::UnixMillis(now.0 - 3_600_000),
                to: now,
                actor: "system:alerts".into(),
                alert_id: Some(alert_id),
            },
        )
        .await?;
    }
    match source {
        // Every blocked delivery is contained, repeat or not: another key of the
        // tenant may be the one receiving now.
        LeakSource::ModelAnswer(_) => contain(app, ctx, rid).await,
        LeakSource::ScanRequest => Ok(()),
    }
}

/// The operator-log entry of a blocked text: the owners named (`owner_tenant`),
/// the finding types and counts, and whom the attribution points at.
async fn leak_entry(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    owners: &[TenantId],
    findings: &[Finding],
    attribution: &str,
) -> AppResult<()> {
    let mut entry = Trail::new(
        app,
        EventKind::GuardLeak,
        format!("key:{}", ctx.key_id()),
        rid,
    )
    .about_tenant(ctx.tenant())
    .denied("cross_tenant")
    .attr("attribution", Attr::Text(attribution.into()));
    for owner in owners {
        entry = entry.subject(Subject::new("owner_tenant", owner.as_str()));
    }
    let theirs: Vec<Finding> = findings
        .iter()
        .filter(|f| f.owner.as_ref().is_some_and(|o| owners.contains(o)))
        .cloned()
        .collect();
    for (kind, n) in &type_counts(&theirs) {
        entry = entry.attr(&format!("found.{kind}"), Attr::Int(*n));
    }
    entry.record(LogId::Operator).await
}

/// A blocked answer whose foreign data the model's own input carried: logged
/// and raised as a warning, never contained (see `report_leak`).
async fn report_supplied(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    owners: &[TenantId],
    findings: &[Finding],
) -> AppResult<()> {
    app.telemetry.leak_supplied();
    tracing::warn!(tenant = %ctx.tenant(), owners = owners.len(), request_id = %rid.0,
        "an answer for this tenant repeated another tenant's canary or text that this tenant's own input \
         (prompt, tool results, documents) carried; it was blocked, no containment. See the operator audit log.");
    leak_entry(app, ctx, rid, owners, findings, "requester_input").await?;
    let mut raised = crate::alerts::new_alert(
        AlertKind::ForeignDataSupplied,
        Severity::Warning,
        Some(ctx.tenant()),
        format!(
            "an answer for this tenant repeated data of {} other tenant(s) (canary or fingerprints) that this tenant's own input \
             carried (its prompt, tool results, session or documents); it was blocked. This is no leak by the shared stack: \
             either that data reached this tenant some other way, or its owner planted it there to have this tenant blocked. \
             Nothing was contained; run an impact report for both tenants if either is unexpected",
            owners.len()
        ),
        app.vault.now().rfc3339(),
    );
    raised.related = owners.iter().map(ToString::to_string).collect();
    raised.dedupe_key = raised.related.join(",");
    raised.related.push(rid.0.clone());
    app.alerts.raise(app, rid, raised).await;
    Ok(())
}

/// Inputs bigger than this are attributed off the async runtime.
const ATTRIBUTE_INLINE_BYTES_MAX: usize = 16 << 10;

/// The other tenants whose data an upstream body carried (`Guard::supplied_owners`
/// over every text in it but inline media). Only run once an answer was caught:
/// a call without a finding never pays for it.
async fn supplied_owners(
    app: &Services,
    tenant: &TenantId,
    pack: &Arc<crate::packs::Pack>,
    body: &serde_json::Map<String, serde_json::Value>,
) -> std::collections::BTreeSet<TenantId> {
    let mut texts = Vec::new();
    for (key, value) in body {
        body_texts(key, value, &mut texts);
    }
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    if bytes <= ATTRIBUTE_INLINE_BYTES_MAX {
        return app.guard.guard.supplied_owners(tenant, &texts, &pack.guard);
    }
    let owned: Zeroizing<Vec<String>> =
        Zeroizing::new(texts.iter().map(|t| (*t).to_owned()).collect());
    let (guard, tenant, pack) = (Arc::clone(&app.guard), tenant.clone(), Arc::clone(pack));
    tokio::task::spawn_blocking(move || {
        let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
        guard.guard.supplied_owners(&tenant, &texts, &pack.guard)
    })
    .await
    // A panicked attribution attributes nothing: the leak is then alerted in full.
    .unwrap_or_default()
}

/// Every string of an upstream body a model reads (message texts, tool
/// definitions, schemas), leaving out inline media: `data:` URLs, audio and file
/// payloads.
fn body_texts<'a>(key: &str, value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            let media = matches!(key, "data" | "file_data") || s.starts_with("data:");
            if !media && !s.is_empty() {
                out.push(s);
            }
        }
        Value::Array(items) => {
            for item in items {
                body_texts(key, item, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                body_texts(k, v, out);
            }
        }
        _ => {}
    }
}

/// Automatic containment after a confirmed leak, as configured: the receiving key
/// or tenant is quarantined at once (the answer was already blocked), logged in the
/// operator's and the tenant's logs as done by the system.
async fn contain(app: &Services, ctx: &TenantCtx, rid: &RequestId) -> AppResult<()> {
    use crate::alerts::Containment;
    let (kind, subject) = match app.alerts.contain_on_leak {
        Containment::Off => return Ok(()),
        Containment::Key => {
            app.vault
                .set_key_quarantine(ctx.tenant(), ctx.key_id(), true)
                .await?;
            (
                EventKind::KeyQuarantine,
                Subject::new("key", ctx.key_id().as_str()),
            )
        }
        Containment::Tenant => {
            app.vault.set_quarantine(ctx.tenant(), true).await?;
            app.retrieval.forget(ctx.tenant());
            (
                EventKind::TenantQuarantine,
                Subject::new("tenant", ctx.tenant().as_str()),
            )
        }
    };
    tracing::warn!(tenant = %ctx.tenant(), key_id = %ctx.key_id(), action = kind.as_str(),
        "automatic containment after a blocked leak; release it with `bulkhead key release` or `bulkhead tenant release` once investigated");
    Trail::new(app, kind, "system:containment".into(), rid)
        .subject(subject)
        .attr("reason", Attr::Text("cross_tenant_leak".into()))
        .record_admin(Some(ctx.tenant()))
        .await
}

/// Protects what a tenant sent through (every message of a call, whatever its
/// role: system and developer prompts, user turns, assistant turns it replays,
/// tool results; and the session history sent with it) for its pack's window, so
/// a model that regurgitates it to another tenant is caught. The keyed evidence
/// goes to the store in the background, sealed, for other replicas and restarts.
pub async fn protect_sent(
    app: &Services,
    tenant: &TenantId,
    pack: &crate::packs::Pack,
    texts: Vec<String>,
) {
    let window_ms = pack
        .retention
        .prompt_window_secs
        .map_or(app.guard.prompt_window_ms, |s| {
            i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)
        });
    let now = app.vault.now().0;
    let bytes: usize = texts.iter().map(String::len).sum();
    let texts = Zeroizing::new(texts);
    let evidence = if bytes <= PROTECT_INLINE_BYTES_MAX {
        protect_all(&app.guard, tenant, &texts, now, window_ms)
    } else {
        let (me, t) = (Arc::clone(&app.guard), tenant.clone());
        tokio::task::spawn_blocking(move || protect_all(&me, &t, &texts, now, window_ms))
            .await
            .unwrap_or_default()
    };
    if evidence.is_empty() {
        return;
    }
    let (vault, tenant) = (Arc::clone(&app.vault), tenant.clone());
    tokio::spawn(async move {
        for ev in evidence {
            let id = format!("{:032x}", ev.digest);
            if let Err(e) = vault
                .put_guard_evidence(
                    &tenant,
                    &id,
                    &ev.to_bytes(),
                    bulkhead_types::UnixMillis(ev.expires_at_ms),
                )
                .await
            {
                tracing::warn!(tenant = %tenant, error = %e,
                    "protected-prompt evidence not stored: this replica protects it, other replicas and a restart will not");
            }
        }
    });
}

fn protect_all(
    guard: &GuardState,
    tenant: &TenantId,
    texts: &[String],
    now: i64,
    window_ms: i64,
) -> Vec<bulkhead_guard::Evidence> {
    texts
        .iter()
        .filter_map(|t| guard.guard.protect_for(tenant, t, now, window_ms))
        .collect()
}

/// Forgets protected prompts whose window ended (their sealed records are deleted
/// by the retention sweeper).
pub fn expire_protected(app: &Services) -> usize {
    app.guard.guard.expire_ephemeral(app.vault.now().0)
}

/// How often a replica on a shared store syncs its guard with the others'
/// writes.
pub const SHARED_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// On a shared store, keeps this replica's guard in step with tenants and
/// documents written through other replicas (see `GuardState::sync_shared`).
pub fn spawn_shared_sync(app: Services) {
    if !app.vault.store().is_shared() {
        return;
    }
    tokio::spawn(async move {
        let mut seen = SyncSeen::default();
        loop {
            expire_protected(&app);
            match sync_pass(&app, &mut seen).await {
                Ok(report) if report.reloaded > 0 => tracing::debug!(
                    tenants = report.reloaded,
                    "output guard synced with other replicas' writes"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e,
                    "the output guard could not sync with other replicas; it retries, and meanwhile scans with what it has"),
            }
            tokio::time::sleep(SHARED_SYNC_INTERVAL).await;
        }
    });
}

/// One pass of the replica sync (`GuardState::sync_shared`) with what follows
/// from it: every tenant that failed to reload is counted in telemetry, and one
/// that failed `SYNC_FAILURES_ALERT` passes in a row raises an alert (once, until
/// it reloads again). An erased tenant is also dropped from this replica's
/// other per-tenant memory (`Services::forget_tenant`).
pub async fn sync_pass(app: &Services, seen: &mut SyncSeen) -> anyhow::Result<SyncReport> {
    let report = app.guard.sync_shared(&app.vault, seen).await?;
    for (tenant, failures) in &report.failed {
        app.telemetry.guard_sync_failed();
        if *failures == SYNC_FAILURES_ALERT {
            let alert = crate::alerts::new_alert(
                AlertKind::GuardSyncFailing,
                Severity::Warning,
                Some(tenant),
                format!(
                    "this replica could not reload the tenant's canaries and fingerprints from the store {failures} times in a row; \
                     it still scans with what it loaded before, which misses the tenant's newer documents. Check the store and the tenant's records"
                ),
                app.vault.now().rfc3339(),
            );
            app.alerts
                .raise(app, &RequestId::internal("guard-sync"), alert)
                .await;
        }
    }
    for tenant in &report.forgotten {
        app.forget_tenant(tenant);
    }
    Ok(report)
}
