//! `GET /admin/v1/tenants/{id}/evidence` over `bulkhead_app::evidence`.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bulkhead_app::EventKind;
use bulkhead_audit::Attr;
use bulkhead_types::{TenantId, UnixMillis};
use serde::Deserialize;

pub use bulkhead_app::evidence::*;

use crate::AppState;
use crate::audit::{Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::Admin;
use crate::incident::parse_bound;

/// Builds the evidence report of `tenant` over `[from, to]`.
pub async fn report(
    state: &AppState,
    tenant: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
) -> ApiResult<EvidenceReport> {
    Ok(bulkhead_app::evidence::report(state, tenant, from, to).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    from: Option<String>,
    to: Option<String>,
    /// `json` (default) or `html`.
    format: Option<String>,
}

/// `GET /admin/v1/tenants/{id}/evidence?from=&to=&format=json|html`, logged as
/// `compliance.report` in the operator log and the tenant's own.
pub async fn show(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    q: Result<Query<EvidenceQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let tenant = TenantId::parse(&id).map_err(|_| ApiError::not_found())?;
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(ProblemKind::InvalidRequest, e.body_text()))?;
    let html = match q.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(other) => {
            return Err(ApiError::new(
                ProblemKind::InvalidRequest,
                format!("`format` is json or html, not {other:?}"),
            ));
        }
    };
    let now = state.vault.now();
    let to = match &q.to {
        Some(raw) => parse_bound(raw, "to")?,
        None => now,
    };
    let from = match &q.from {
        Some(raw) => parse_bound(raw, "from")?,
        None => UnixMillis(to.0 - DEFAULT_PERIOD_DAYS * 86_400_000),
    };
    if from > to {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "`from` must not be after `to`",
        ));
    }
    let report = report(&state, &tenant, from, to).await?;
    Trail::admin(&state, EventKind::ComplianceReport, &rid)
        .attr(
            "tenant_log_verified",
            Attr::Text(report.audit.tenant_log.ok.to_string()),
        )
        .attr("findings", Attr::Int(report.findings.len() as i64))
        .record_admin(Some(&tenant))
        .await?;
    if html {
        let page = crate::evidence_html::render(&report);
        Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
    } else {
        Ok(axum::Json(report).into_response())
    }
}
