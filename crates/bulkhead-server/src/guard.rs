//! `POST /v1/guard/scan`, the sidecar endpoint a deployment calls on any text
//! before it reaches a tenant: its wire types and the scan call. The guard's
//! state and what a caught leak sets off live in `bulkhead_app::guard`.
//!
//! A response for tenant A that carries another tenant's canary or exclusive
//! fingerprints is blocked (invariant 3); A's client is never told whose data it
//! matched, nor anything else about it (no oracle).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bulkhead_app::EventKind;
use bulkhead_audit::Attr;
use bulkhead_guard::{ScanOutcome, Verdict};
use bulkhead_types::LogId;
use bulkhead_vault::TenantCtx;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use bulkhead_app::guard::*;

use crate::AppState;
use crate::audit::{RequestId, Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{StrictJson, Tenant};

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

/// `POST /v1/guard/scan`: checks the text's size, finds the tenant's pack, then
/// screens an input or retrieved text, or scans an output.
pub async fn scan(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
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
        report_leak(
            state,
            ctx,
            self.rid,
            &self.pack,
            &outcome.findings,
            LeakSource::ScanRequest,
        )
        .await?;
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
