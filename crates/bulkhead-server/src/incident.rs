//! The impact-report and incident endpoints over `bulkhead_app::incident`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_app::EventKind;
use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{LogId, TenantId};
use serde::Deserialize;

pub use bulkhead_app::incident::*;

use crate::AppState;
use crate::audit::{Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{Admin, StrictJson};

/// Incidents listed at most (all that are kept).
const INCIDENTS_LISTED_MAX: usize = 1000;

// ---- HTTP --------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    from: String,
    to: String,
}

/// `GET /admin/v1/tenants/{id}/impact?from=&to=`: the impact report, logged as
/// `incident.report` in the operator log.
pub async fn impact(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    q: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ImpactReport>> {
    let tenant = TenantId::parse(&id).map_err(|_| ApiError::not_found())?;
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(ProblemKind::InvalidRequest, e.body_text()))?;
    let (from, to) = (parse_bound(&q.from, "from")?, parse_bound(&q.to, "to")?);
    let report = impact_report(&state, &tenant, from, to).await?;
    Trail::admin(&state, EventKind::IncidentReport, &rid)
        .about_tenant(&tenant)
        .attr("from", Attr::Text(report.from.clone()))
        .attr("to", Attr::Text(report.to.clone()))
        .attr(
            "items",
            Attr::Int(
                (report.read.len()
                    + report.returned.len()
                    + report.blocked.len()
                    + report.other.len()) as i64,
            ),
        )
        .record(LogId::Operator)
        .await?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIncidentRequest {
    pub tenant: String,
    pub title: Option<String>,
    pub from: String,
    pub to: Option<String>,
    pub alert_id: Option<String>,
}

/// `POST /admin/v1/incidents` `{tenant, from, to?, title?, alert_id?}` → 201.
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    StrictJson(req): StrictJson<OpenIncidentRequest>,
) -> ApiResult<Response> {
    let tenant = TenantId::parse(&req.tenant).map_err(|_| ApiError::not_found())?;
    state.vault.tenant(&tenant).await?;
    let from = parse_bound(&req.from, "from")?;
    let to = match &req.to {
        Some(raw) => parse_bound(raw, "to")?,
        None => state.vault.now(),
    };
    if from > to {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "`from` must not be after `to`",
        ));
    }
    let title = req
        .title
        .unwrap_or_else(|| format!("investigation of {tenant}"));
    if title.len() > 200 {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "`title` is limited to 200 bytes",
        ));
    }
    let incident = open(
        &state,
        &rid,
        NewIncident {
            title,
            tenant,
            related_tenants: Vec::new(),
            from,
            to,
            actor: "admin".into(),
            alert_id: req.alert_id,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(incident)).into_response())
}

/// `GET /admin/v1/incidents`.
pub async fn list(_: Admin, State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "incidents": state.incidents.recent(INCIDENTS_LISTED_MAX) }))
}

/// `GET /admin/v1/incidents/{id}`: the incident and its impact report.
pub async fn show(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let incident = state.incidents.get(&id).ok_or_else(ApiError::not_found)?;
    let tenant = incident.tenant.clone();
    let (from, to) = (
        parse_bound(&incident.from, "from")?,
        parse_bound(&incident.to, "to")?,
    );
    let report = impact_report(&state, &tenant, from, to).await?;
    Ok(Json(
        serde_json::json!({ "incident": incident, "report": report }),
    ))
}

/// `POST /admin/v1/incidents/{id}/close`.
pub async fn close(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<Incident>> {
    let incident = state
        .incidents
        .close(&id, state.vault.now().rfc3339())
        .ok_or_else(ApiError::not_found)?;
    Trail::admin(&state, EventKind::IncidentClose, &rid)
        .subject(Subject::new("incident", &*incident.id))
        .record_admin(Some(&incident.tenant))
        .await?;
    Ok(Json(incident))
}
