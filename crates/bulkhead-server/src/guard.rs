//! The output guard at the edge: its state kept in step with the store (canaries
//! seeded at tenant creation, fingerprints on every document write and delete,
//! both rebuilt at start), and `POST /v1/guard/scan`, the sidecar endpoint a
//! deployment calls on any text before it reaches a tenant.
//!
//! A response for tenant A that carries another tenant's canary or exclusive
//! fingerprints is blocked (invariant 3); the hit goes into A's audit log (types
//! and counts, never the text) and, with the owning tenant named, into the operator
//! log, and is logged as a warning for operators. A's client is never told whose
//! data it matched.

use bulkhead_app::EventKind;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bulkhead_audit::{Attr, Subject};
use bulkhead_guard::{Finding, FindingKind, Guard, Policy, ScanOutcome, Verdict};
use bulkhead_types::{DocumentId, LogId, TenantId};
use bulkhead_vault::{TenantCtx, Vault};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::AppState;
use crate::audit::{RequestId, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{StrictJson, Tenant};

/// The guard, and the policy of tenants whose pack is unknown (requests apply the
/// tenant's compliance pack, `AppState::packs`).
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

/// Per tenant, the record generations of its documents and of its protected
/// prompts that this replica last loaded.
pub type SyncSeen = std::collections::HashMap<TenantId, ((i64, u64), (i64, u64))>;

/// Cross-tenant hits one key may get from `/v1/guard/scan` per minute before it is
/// refused (429): the endpoint must not become an oracle for what others hold.
pub const SCAN_HITS_PER_MINUTE_MAX: u32 = 5;
/// Keys tracked by that limiter at once (the oldest minute's entries go first).
const SCAN_HIT_KEYS_MAX: usize = 10_000;
/// Above this much text to protect, the evidence is computed off the runtime.
const PROTECT_INLINE_BYTES_MAX: usize = 16 << 10;

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
    fn scan_hit_allowed(&self, key: &str, now_ms: i64) -> bool {
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
    fn scan_refused(&self, key: &str, now_ms: i64) -> bool {
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
        let mut n = 0;
        for body in vault.guard_evidence(tenant).await? {
            match bulkhead_guard::Evidence::from_bytes(&body) {
                Some(ev) => {
                    self.guard.load_evidence(tenant, &ev, now);
                    n += 1;
                }
                None => tracing::warn!(tenant = %tenant,
                    "a stored guard evidence record has an unknown format; it is ignored"),
            }
        }
        Ok(n)
    }

    /// Gives a new tenant its first canary, stored sealed so it survives restarts.
    pub async fn seed_tenant(&self, vault: &Vault, tenant: &TenantId) -> ApiResult<()> {
        let token = Zeroizing::new(self.guard.seed_canary(tenant).map_err(|e| {
            tracing::error!(error = %e, "could not seed a canary");
            ApiError::internal()
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
    /// new tenant) is reloaded, an erased one forgotten. Returns the tenants
    /// reloaded. Between a write on another replica and the next sync, this
    /// replica scans with what it had (canaries of tenants it knows, older
    /// fingerprints): the bounded delay is the sync interval.
    pub async fn sync_shared(&self, vault: &Vault, seen: &mut SyncSeen) -> anyhow::Result<usize> {
        let mut present = std::collections::HashSet::new();
        let mut reloaded = 0;
        let mut cursor = None::<String>;
        loop {
            let (page, next) = vault.list_tenants(cursor.as_deref(), 100).await?;
            for tenant in &page {
                present.insert(tenant.id.clone());
                let generation = vault
                    .store()
                    .record_generation(&tenant.id, bulkhead_types::RecordKind::DOCUMENT)
                    .await?;
                let evidence = vault
                    .store()
                    .record_generation(&tenant.id, bulkhead_types::RecordKind::GUARD_EVIDENCE)
                    .await?;
                match seen.get(&tenant.id) {
                    Some((g, _)) if *g == generation => {
                        // Documents unchanged: only new protected prompts to add
                        // (known ones are skipped).
                        if seen.get(&tenant.id).is_some_and(|(_, e)| *e != evidence) {
                            self.load_evidence(vault, &tenant.id).await?;
                            seen.insert(tenant.id.clone(), (generation, evidence));
                            reloaded += 1;
                        }
                        continue;
                    }
                    _ => {}
                }
                // Reload the tenant whole: drop what this replica held (its
                // fingerprints are refcounted per document, so re-adding alone
                // would count twice), then its canaries and documents as stored.
                self.guard.remove_tenant(&tenant.id);
                for token in &vault.canaries(&tenant.id).await? {
                    self.guard.add_canary(&tenant.id, token)?;
                }
                for doc in vault.documents_of(&tenant.id).await? {
                    self.index(&tenant.id, &doc.id, &doc.text).await;
                }
                self.load_evidence(vault, &tenant.id).await?;
                seen.insert(tenant.id.clone(), (generation, evidence));
                reloaded += 1;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let gone: Vec<TenantId> = seen
            .keys()
            .filter(|t| !present.contains(*t))
            .cloned()
            .collect();
        for tenant in gone {
            self.guard.remove_tenant(&tenant);
            seen.remove(&tenant);
        }
        Ok(reloaded)
    }

    /// Rebuilds canaries and fingerprints from the store, tenant by tenant, and
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
                        .map_err(|e| anyhow::anyhow!("seed a canary: {}", e.detail))?;
                }
                for token in &canaries {
                    self.guard.add_canary(&tenant.id, token)?;
                }
                for doc in vault.documents_of(&tenant.id).await? {
                    self.index(&tenant.id, &doc.id, &doc.text).await;
                    documents += 1;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    pub text: String,
    #[serde(default)]
    pub direction: Direction,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FindingResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub start: usize,
    pub end: usize,
    pub action: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ScanResponse {
    /// `allow`, `redacted` or `blocked` (output); `allow`, `flag`, `drop` or
    /// `block` (input, context).
    pub verdict: String,
    pub findings: Vec<FindingResponse>,
    /// The text to use: redacted when the verdict is `redacted`, `null` when
    /// blocked.
    pub text: Option<String>,
    /// Injection score 0–100 and the rules that fired (input, context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injection: Option<serde_json::Value>,
}

fn kind_name(kind: &FindingKind) -> String {
    kind.to_string()
}

/// Counts of finding types, for the audit log: never the text.
pub(crate) fn type_counts(findings: &[Finding]) -> std::collections::BTreeMap<String, i64> {
    let mut counts = std::collections::BTreeMap::new();
    for f in findings {
        *counts.entry(kind_name(&f.kind)).or_insert(0) += 1;
    }
    counts
}

/// The other tenants whose data the findings matched, sorted, once each.
pub(crate) fn leak_owners(findings: &[Finding]) -> Vec<TenantId> {
    let mut owners: Vec<TenantId> = findings.iter().filter_map(|f| f.owner.clone()).collect();
    owners.sort();
    owners.dedup();
    owners
}

/// Invariant 3: a leak is blocked (by the caller), logged where the operator sees
/// whose data it was, and raised loudly. The requesting tenant's own log gets the
/// denial from the caller's event; nothing here names the owner to it.
pub(crate) async fn report_leak(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    findings: &[Finding],
) -> ApiResult<()> {
    let owners = leak_owners(findings);
    if owners.is_empty() {
        return Ok(());
    }
    state.metrics.leak_blocked();
    tracing::warn!(tenant = %ctx.tenant(), owners = owners.len(), request_id = %rid.0,
        "CROSS-TENANT LEAK BLOCKED: a text for this tenant carried another tenant's canary or \
         fingerprints. See the operator audit log; consider quarantining the upstream or the tenant.");
    let mut alert = Trail::new(
        state,
        EventKind::GuardLeak,
        format!("key:{}", ctx.key_id()),
        rid,
    )
    .about_tenant(ctx.tenant())
    .denied("cross_tenant");
    for owner in &owners {
        alert = alert.subject(Subject::new("owner_tenant", owner.as_str()));
    }
    for (kind, n) in &type_counts(findings) {
        alert = alert.attr(&format!("found.{kind}"), Attr::Int(*n));
    }
    alert.record(LogId::Operator).await?;
    let mut raised = crate::alerts::new_alert(
        bulkhead_app::AlertKind::CrossTenantLeak,
        bulkhead_app::Severity::Critical,
        Some(ctx.tenant()),
        format!(
            "an answer for this tenant carried data of {} other tenant(s) (canary or fingerprints) and was blocked; \
             check the upstream model for shared caching or memorisation, and consider quarantining the key or tenant",
            owners.len()
        ),
        state.vault.now().rfc3339(),
    );
    raised.related = owners.iter().map(ToString::to_string).collect();
    raised.related.push(rid.0.clone());
    let alert_id = raised.id.clone();
    state.alerts.raise(state, rid, raised).await;
    // A confirmed leak is an incident at once: the window starts an hour back so
    // the report shows what led up to it.
    let now = state.vault.now();
    crate::incident::open(
        state,
        rid,
        crate::incident::NewIncident {
            title: "cross-tenant leak blocked".into(),
            tenant: ctx.tenant().clone(),
            related_tenants: owners.iter().map(ToString::to_string).collect(),
            from: bulkhead_types::UnixMillis(now.0 - 3_600_000),
            to: now,
            actor: "system:alerts".into(),
            alert_id: Some(alert_id),
        },
    )
    .await?;
    contain(state, ctx, rid).await
}

/// Automatic containment after a confirmed leak, as configured: the receiving key
/// or tenant is quarantined at once (the answer was already blocked), logged in the
/// operator's and the tenant's logs as done by the system.
async fn contain(state: &AppState, ctx: &TenantCtx, rid: &RequestId) -> ApiResult<()> {
    use crate::alerts::Containment;
    let (kind, subject) = match state.alerts.contain_on_leak {
        Containment::Off => return Ok(()),
        Containment::Key => {
            state
                .vault
                .set_key_quarantine(ctx.tenant(), ctx.key_id(), true)
                .await?;
            (
                EventKind::KeyQuarantine,
                Subject::new("key", ctx.key_id().as_str()),
            )
        }
        Containment::Tenant => {
            state.vault.set_quarantine(ctx.tenant(), true).await?;
            state.retrieval.forget(ctx.tenant());
            (
                EventKind::TenantQuarantine,
                Subject::new("tenant", ctx.tenant().as_str()),
            )
        }
    };
    tracing::warn!(tenant = %ctx.tenant(), key_id = %ctx.key_id(), action = kind.as_str(),
        "automatic containment after a blocked leak; release it with `bulkhead key release` or `bulkhead tenant release` once investigated");
    Trail::new(state, kind, "system:containment".into(), rid)
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
pub(crate) async fn protect_sent(
    state: &AppState,
    tenant: &TenantId,
    pack: &crate::packs::Pack,
    texts: Vec<String>,
) {
    let window_ms = pack
        .retention
        .prompt_window_secs
        .map_or(state.guard.prompt_window_ms, |s| {
            i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)
        });
    let now = state.vault.now().0;
    let bytes: usize = texts.iter().map(String::len).sum();
    let texts = Zeroizing::new(texts);
    let evidence = if bytes <= PROTECT_INLINE_BYTES_MAX {
        protect_all(&state.guard, tenant, &texts, now, window_ms)
    } else {
        let (me, t) = (Arc::clone(&state.guard), tenant.clone());
        tokio::task::spawn_blocking(move || protect_all(&me, &t, &texts, now, window_ms))
            .await
            .unwrap_or_default()
    };
    if evidence.is_empty() {
        return;
    }
    let (vault, tenant) = (Arc::clone(&state.vault), tenant.clone());
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
pub fn expire_protected(state: &AppState) -> usize {
    state.guard.guard.expire_ephemeral(state.vault.now().0)
}

/// `POST /v1/guard/scan`: the guard as a sidecar. The tenant is the key's.
/// How often a replica on a shared store syncs its guard with the others'
/// writes.
pub const SHARED_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// On a shared store, keeps this replica's guard in step with tenants and
/// documents written through other replicas (see `GuardState::sync_shared`).
pub fn spawn_shared_sync(state: AppState) {
    if !state.vault.store().is_shared() {
        return;
    }
    tokio::spawn(async move {
        let mut seen = std::collections::HashMap::new();
        loop {
            expire_protected(&state);
            match state.guard.sync_shared(&state.vault, &mut seen).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(
                    tenants = n,
                    "output guard synced with other replicas' writes"
                ),
                Err(e) => tracing::warn!(error = %e,
                    "the output guard could not sync with other replicas; it retries, and meanwhile scans with what it has"),
            }
            tokio::time::sleep(SHARED_SYNC_INTERVAL).await;
        }
    });
}

/// `POST /v1/guard/scan`: checks the text's size, finds the tenant's pack, then
/// screens an input or retrieved text, or scans an output.
pub async fn scan(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    rid: RequestId,
    StrictJson(req): StrictJson<ScanRequest>,
) -> ApiResult<Json<ScanResponse>> {
    let guard = &state.guard;
    let text = Zeroizing::new(req.text);
    if text.len() > guard.text_bytes_max {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!("text must be at most {} bytes", guard.text_bytes_max),
        ));
    }
    let tenant_log = LogId::Tenant(ctx.tenant().clone());
    // The tenant's own compliance pack decides what each detector does.
    let pack = state
        .packs
        .for_tenant(&state.vault.tenant(ctx.tenant()).await?.policy);
    let call = ScanCall {
        state: &state,
        ctx: &ctx,
        rid: &rid,
        tenant_log,
        pack,
    };
    if req.direction != Direction::Output {
        return call.screen(req.direction, &text).await.map(Json);
    }
    call.scan_output(&text).await.map(Json)
}

/// What the stages of one scan call share.
struct ScanCall<'a> {
    state: &'a AppState,
    ctx: &'a TenantCtx,
    rid: &'a RequestId,
    tenant_log: LogId,
    pack: Arc<crate::packs::Pack>,
}

impl ScanCall<'_> {
    /// Screens an input or a retrieved text for injected instructions; its own
    /// path because it is audited and answered differently from an output scan.
    async fn screen(self, direction: Direction, text: &str) -> ApiResult<ScanResponse> {
        let (state, guard) = (self.state, &self.state.guard);
        let report = match direction {
            Direction::Input => guard.guard.screen_input(text, &self.pack.guard),
            _ => guard.guard.screen_retrieved(text, &self.pack.guard),
        };
        let verdict = report.action.as_str();
        Trail::tenant(state, self.ctx, EventKind::GuardScreen, self.rid)
            .attr("direction", Attr::Text(direction.as_str().into()))
            .attr("score", Attr::Int(i64::from(report.score)))
            .attr("verdict", Attr::Text(verdict.into()))
            .record(self.tenant_log)
            .await?;
        let text = matches!(
            report.action,
            bulkhead_guard::InjectionAction::Allow | bulkhead_guard::InjectionAction::Flag
        )
        .then(|| text.to_string());
        Ok(ScanResponse {
            verdict: verdict.into(),
            findings: Vec::new(),
            text,
            injection: Some(serde_json::json!({"score": report.score, "rules": report.rules})),
        })
    }

    /// Scans an output text (refused past the key's rate of cross-tenant hits),
    /// audits the verdict, reports a leak, and answers without an oracle.
    async fn scan_output(self, text: &Zeroizing<String>) -> ApiResult<ScanResponse> {
        let (state, ctx, guard) = (self.state, self.ctx, &self.state.guard);
        let now = state.vault.now().0;
        let key = ctx.key_id().to_string();
        if guard.scan_refused(&key, now) {
            // Past the limit the text is not even scanned: nothing more is learnt.
            Trail::tenant(state, ctx, EventKind::GuardScan, self.rid)
                .denied("rate_limited")
                .record(self.tenant_log)
                .await?;
            return Err(ApiError::new(
                ProblemKind::RateLimited,
                format!(
                    "too many scans matched other tenants' data this minute (at most {SCAN_HITS_PER_MINUTE_MAX}); retry in a minute"
                ),
            ));
        }
        let (me, tenant, body) = (Arc::clone(guard), ctx.tenant().clone(), text.clone());
        let policy = Arc::clone(&self.pack);
        let outcome =
            tokio::task::spawn_blocking(move || me.guard.scan(&tenant, &body, &policy.guard))
                .await
                .map_err(|_| ApiError::internal())?;
        let leaked = !leak_owners(&outcome.findings).is_empty();
        self.record_scan(&outcome, leaked).await?;
        state.traffic.record_findings(
            state.vault.now(),
            &outcome.findings,
            outcome.verdict == Verdict::Blocked,
        );
        report_leak(state, ctx, self.rid, &outcome.findings).await?;
        if leaked {
            // No oracle: a text that matched another tenant's data is "blocked" and
            // nothing else — no spans, no kinds, no count, no partial text — so a
            // caller cannot map out what others hold. Repeats are limited per key.
            if !guard.scan_hit_allowed(&key, now) {
                tracing::warn!(tenant = %ctx.tenant(), key_id = %ctx.key_id(),
                    "a key keeps scanning texts that match other tenants' data; further scans are refused this minute");
            }
            return Ok(ScanResponse {
                verdict: "blocked".into(),
                findings: Vec::new(),
                text: None,
                injection: None,
            });
        }
        Ok(scan_response(&outcome, text))
    }

    /// Audits an output scan: its verdict and what it found by kind, denied
    /// when it matched another tenant's data.
    async fn record_scan(&self, outcome: &ScanOutcome, leaked: bool) -> ApiResult<()> {
        let counts = type_counts(&outcome.findings);
        let mut trail = Trail::tenant(self.state, self.ctx, EventKind::GuardScan, self.rid)
            .attr("verdict", Attr::Text(outcome.verdict.as_str().into()));
        for (kind, n) in &counts {
            trail = trail.attr(&format!("found.{kind}"), Attr::Int(*n));
        }
        if leaked {
            trail = trail.denied("cross_tenant");
        }
        trail.record(self.tenant_log.clone()).await?;
        Ok(())
    }
}

/// The answer to an output scan of the tenant's own data: the findings with
/// their spans, and the text as the policy leaves it.
fn scan_response(outcome: &ScanOutcome, text: &str) -> ScanResponse {
    let findings = outcome
        .findings
        .iter()
        .map(|f| FindingResponse {
            kind: kind_name(&f.kind),
            start: f.span.start,
            end: f.span.end,
            action: f.action.as_str().into(),
        })
        .collect();
    ScanResponse {
        verdict: outcome.verdict.as_str().into(),
        findings,
        text: outcome.output(text).map(str::to_owned),
        injection: None,
    }
}
